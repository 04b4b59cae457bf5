"""Tests of trainer.serving.promote racing itself, and of the GCS preconditions it relies on."""

import concurrent.futures
import json
import logging
import multiprocessing
import re
import threading

from gcp_storage_emulator import server as emulator_server
from google.api_core import exceptions
from google.cloud import storage as gcs
import pytest

from tests import fake_gcs
from tests.serving.promote_testing import decisions
from tests.serving.promote_testing import FakeAssessor
from tests.serving.promote_testing import GcsBackend
from tests.serving.promote_testing import LocalBackend
from tests.serving.promote_testing import model_ids
from tests.serving.promote_testing import pointer
from tests.serving.promote_testing import write_export
from trainer.serving import promote
from trainer import storage


# --- Races: two promotions at once.


def check_one_winner(files, records, initial):
  """Both promotions ran against `initial`; exactly one won and the loser saw it win."""
  winners = [r for r in records if r["promoted"]]
  losers = [r for r in records if not r["promoted"]]
  assert len(winners) == 1 and len(losers) == 1
  winner, loser = winners[0], losers[0]
  assert winner["production_model_id"] == initial["model_id"] and winner["lost_races"] == 0
  assert loser["lost_races"] == 1 and loser["production_model_id"] == winner["model_id"]
  assert pointer(files)["model_id"] == winner["model_id"]
  assert model_ids(files) == {initial["model_id"], winner["model_id"]}  # Loser's copy removed.
  assert sorted(json.dumps(r, sort_keys=True) for r in decisions(files)) == sorted(
      json.dumps(r, sort_keys=True) for r in [initial, *records])


def promote_after_barrier(candidate, production, barrier, results):
  """In a child process: promotes, holding the first pointer switch until all racers reach it."""
  replace_if = storage.LocalStore.replace_if
  waited = []

  def replace_if_after_barrier(store, name, data, token):
    """The real compare-and-swap, once every racer has read the old pointer."""
    if not waited:
      waited.append(barrier.wait())
    return replace_if(store, name, data, token)

  storage.LocalStore.replace_if = replace_if_after_barrier
  results.put(promote.promote(candidate, production, FakeAssessor()))


@pytest.mark.slow
def test_two_local_processes_at_once_leave_one_winner(tmp_path):
  """Two processes that both read the old pointer: the fcntl compare-and-swap lets one win."""
  backend = LocalBackend(tmp_path)
  initial = backend.promote(backend.candidate("initial", 0.8).location)
  context = multiprocessing.get_context("spawn")
  barrier, results = context.Barrier(2, timeout=60), context.Queue()
  racers = [context.Process(target=promote_after_barrier,
                            args=(backend.candidate(name, 0.9).location, backend.production,
                                  barrier, results)) for name in ("a", "b")]
  for racer in racers:
    racer.start()
  records = [results.get(timeout=120) for _ in racers]
  for racer in racers:
    racer.join(timeout=60)
    assert racer.exitcode == 0
  check_one_winner(backend.files(), records, initial)


def race_on_gcs(backend, accuracies):
  """Two threads promote at once; both read the pointer before either switches it."""
  initial = backend.promote(backend.candidate("initial", 0.8).location)
  candidates = [backend.candidate(f"c{i}", a).location for i, a in enumerate(accuracies)]
  barrier, held = threading.Barrier(2, timeout=30), []

  def hold_first_switches(name):
    """Holds the first switch of each racer until both are there."""
    if name.endswith("/CURRENT.json") and len(held) < 2:
      held.append(name)
      barrier.wait()

  backend.client.before_write = hold_first_switches
  with concurrent.futures.ThreadPoolExecutor(2) as pool:
    records = list(pool.map(backend.promote, candidates))
  return initial, records


def test_two_gcs_promotions_at_once_leave_one_winner(tmp_path):
  """Two promotions that both read the old pointer: the generation precondition lets one win."""
  backend = GcsBackend(tmp_path)
  initial, records = race_on_gcs(backend, [0.9, 0.9])
  check_one_winner(backend.files(), records, initial)


def test_the_loser_of_a_race_decides_again_against_the_winner(tmp_path):
  """A better loser is promoted over the winner, a worse one refused: the best ends on top."""
  backend = GcsBackend(tmp_path)
  initial, records = race_on_gcs(backend, [0.9, 0.91])
  files = backend.files()
  assert sorted(r["lost_races"] for r in records) == [0, 1]
  loser = next(r for r in records if r["lost_races"])
  # The loser judged against the winner: refused if worse, promoted over it if better.
  assert loser["production_model_id"] not in (None, initial["model_id"])
  assert loser["promoted"] == (loser["candidate_accuracy"] == 0.91)
  assert pointer(files)["accuracy"] == 0.91
  assert len(model_ids(files)) == 1 + sum(r["promoted"] for r in records)


def test_fake_gcs_honours_generation_preconditions():
  """The fake refuses stale or create-only writes and stale reads, like GCS."""
  client = fake_gcs.FakeClient()
  bucket = client.bucket("b")
  assert bucket.get_blob("pointer") is None
  bucket.blob("pointer").upload_from_string(b"first", if_generation_match=0)
  with pytest.raises(exceptions.PreconditionFailed):
    bucket.blob("pointer").upload_from_string(b"again", if_generation_match=0)
  seen = bucket.get_blob("pointer")
  assert seen.download_as_bytes(if_generation_match=seen.generation) == b"first"
  bucket.blob("pointer").upload_from_string(b"second")
  with pytest.raises(exceptions.PreconditionFailed):
    seen.download_as_bytes(if_generation_match=seen.generation)
  with pytest.raises(exceptions.PreconditionFailed):
    seen.upload_from_string(b"stale", if_generation_match=seen.generation)
  assert bucket.get_blob("pointer").download_as_bytes() == b"second"


@pytest.mark.usefixtures("emulator")
def test_real_client_on_the_emulator_promotes_with_conditional_writes_only(tmp_path, caplog):
  """The real client runs the promotions and sends a generation precondition on every upload."""
  # The emulator ignores preconditions (hence the fake above), but it runs the real client: the
  # same calls end to end, and every upload it receives must carry ifGenerationMatch.
  caplog.set_level(logging.INFO, logger=emulator_server.__name__)
  client = gcs.Client()
  client.create_bucket("exports")
  client.create_bucket("production")
  for name, accuracy in (("a", 0.85), ("b", 0.84), ("c", 0.9)):
    for relative, data in write_export(str(tmp_path / name), accuracy).items():
      client.bucket("exports").blob(f"{name}/{relative}").upload_from_string(data)
  records = [promote.promote(f"gs://exports/{name}", "gs://production/imdb", FakeAssessor())
             for name in "abc"]
  assert [r["verdict"] for r in records] == ["promoted", "regression", "promoted"]
  current = json.loads(client.bucket("production").blob("imdb/CURRENT.json").download_as_bytes())
  assert current["model_id"] == records[2]["model_id"]
  kept = {blob.name for blob in client.list_blobs("production", prefix="imdb/models/")}
  assert {name.split("/")[2] for name in kept} == {records[0]["model_id"], records[2]["model_id"]}
  uploads = [record.getMessage() for record in caplog.records
             if "POST /upload/storage/v1/b/production/" in record.getMessage()]
  preconditions = [re.search(r"ifGenerationMatch=(\d+)", upload) for upload in uploads]
  assert len(uploads) == 2 * 5 + 2 + 3 and all(preconditions)  # Models, pointers, decisions.
  # Every write creates a new object, but the second pointer replaces the generation it read.
  assert sorted(int(match.group(1)) > 0 for match in preconditions) == [False] * 14 + [True]
