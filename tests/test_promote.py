"""Tests of trainer.promote on fake exports, local and on GCS (an in-memory fake client)."""

import collections
import concurrent.futures
import json
import logging
import multiprocessing
import os
import re
import shutil
import socket
import subprocess
import sys
import threading

from gcp_storage_emulator import server as emulator_server
from google.api_core import exceptions
from google.cloud import storage as gcs
import pytest

import fake_gcs
from trainer import promote
from trainer.errors import UserInputError

Export = collections.namedtuple("Export", ["location", "files"])


def write_export(directory, accuracy, version="1795903751"):
  """Writes a fake export (no real model) with this test accuracy; returns {name: bytes}."""
  scores = {"accuracy": accuracy, "loss": 0.3, "auc": 0.95, "precision": 0.9, "recall": 0.88}
  metadata = {"format": "imdb-bilstm-export", "format_version": 1, "version": version,
              "created": "2026-11-28T22:00:00Z", "step": 2110, "test": scores,
              "validation": scores, "config": {}, "versions": {},
              "data": {"fingerprint": "f", "vocab_sha256": "v"}}
  files = {"export_metadata.json": json.dumps(metadata).encode(),
           "saved_model.pb": f"graph of a model scoring {accuracy}".encode(),
           "variables/variables.index": b"index",
           "variables/variables.data-00000-of-00001": os.urandom(256),
           "vocab.txt": b"<pad>\n<unk>\nthe\n"}
  for name, data in files.items():
    path = os.path.join(directory, *name.split("/"))
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "wb") as f:
      f.write(data)
  return files


def read_tree(directory):
  """{name relative to `directory`: bytes} of every file under it."""
  tree = {}
  for folder, _, files in os.walk(directory):
    for name in files:
      path = os.path.join(folder, name)
      with open(path, "rb") as f:
        tree[os.path.relpath(path, directory).replace(os.sep, "/")] = f.read()
  return tree


class LocalBackend:
  """Production and candidates in local folders."""

  def __init__(self, tmp_path):
    """Everything under `tmp_path`."""
    self.tmp_path = tmp_path
    self.production = str(tmp_path / "production")

  def candidate(self, name, accuracy, **kwargs):
    """A fake export named `name`."""
    location = str(self.tmp_path / "exports" / name)
    return Export(location, write_export(location, accuracy, **kwargs))

  def promote(self, candidate, **kwargs):
    """Calls promote.promote with this production."""
    return promote.promote(candidate, self.production, **kwargs)

  def files(self):
    """{name: bytes} of every file in production."""
    return read_tree(self.production)

  def location(self, name):
    """The path of a production file."""
    return os.path.join(self.production, *name.split("/"))

  def fail_model_copies_after_one_file(self, monkeypatch):
    """Makes the copy of a model fail after its first file."""
    copied = []
    copy2 = shutil.copy2

    def copy_one_then_fail(source, destination):
      """shutil.copy2, failing from the second file on."""
      if copied:
        raise OSError("disk full (simulated)")
      copied.append(source)
      return copy2(source, destination)

    monkeypatch.setattr(shutil, "copy2", copy_one_then_fail)


class GcsBackend:
  """Production in gs://production-bucket/imdb and candidates in gs://exports, on a fake client."""

  production = "gs://production-bucket/imdb"

  def __init__(self, tmp_path):
    """Local staging under `tmp_path`; objects in a fresh fake client."""
    self.tmp_path = tmp_path
    self.client = fake_gcs.FakeClient()

  def candidate(self, name, accuracy, **kwargs):
    """A fake export uploaded to gs://exports/<name>."""
    files = write_export(str(self.tmp_path / "staging" / name), accuracy, **kwargs)
    for relative, data in files.items():
      self.client.write("exports", f"{name}/{relative}", data, if_generation_match=0)
    return Export(f"gs://exports/{name}", files)

  def promote(self, candidate, **kwargs):
    """Calls promote.promote with this production and the fake client."""
    return promote.promote(candidate, self.production, gcs_client=self.client, **kwargs)

  def files(self):
    """{name: bytes} of every object in production."""
    return self.client.files("production-bucket", "imdb/")

  def location(self, name):
    """The URL of a production object."""
    return f"{self.production}/{name}"

  def fail_model_copies_after_one_file(self, monkeypatch):
    """Makes the copy of a model fail after its first object."""
    del monkeypatch  # The fake client has its own hook.
    copied = []

    def fail_after_one_model_file(name):
      """Lets one write under models/ through, then fails."""
      if "/models/" in name:
        if copied:
          raise exceptions.ServiceUnavailable("network down (simulated)")
        copied.append(name)

    self.client.before_write = fail_after_one_model_file


@pytest.fixture(params=["local", "gcs"])
def backend(request, tmp_path):
  """Each test on a local production folder and on a GCS one."""
  return {"local": LocalBackend, "gcs": GcsBackend}[request.param](tmp_path)


def pointer(files):
  """The parsed CURRENT.json among production files."""
  return json.loads(files["CURRENT.json"])


def decisions(files):
  """The logged decision records among production files, oldest first."""
  return [json.loads(data) for name, data in sorted(files.items())
          if name.startswith("decisions/")]


def model(files, model_id):
  """{name: bytes} of the copy of a model among production files."""
  prefix = f"models/{model_id}/"
  return {name[len(prefix):]: data for name, data in files.items() if name.startswith(prefix)}


def model_ids(files):
  """The ids of the models kept in production."""
  return {name.split("/")[1] for name in files if name.startswith("models/")}


def without_decisions(files):
  """Production files except the decision log."""
  return {name: data for name, data in files.items() if not name.startswith("decisions/")}


# --- Deciding.


def test_first_candidate_is_promoted(backend):
  """With no production model, the candidate is copied in full and the pointer names it."""
  export = backend.candidate("a", 0.85)
  record = backend.promote(export.location)
  files = backend.files()
  assert record["promoted"] and record["reason"] == "no production model yet"
  assert record["production_model_id"] is None and record["production_test_accuracy"] is None
  assert record["model_id"].startswith("1795903751-")
  current = pointer(files)
  assert current["model_id"] == record["model_id"]
  assert current["path"] == record["model_path"] == backend.location(f"models/{record['model_id']}")
  assert current["test_accuracy"] == 0.85 and current["candidate"] == export.location
  assert model(files, record["model_id"]) == export.files
  assert decisions(files) == [record]


def test_worse_candidate_is_refused_and_production_untouched(backend):
  """A lower accuracy is refused; pointer and models stay byte for byte; the refusal is logged."""
  first = backend.promote(backend.candidate("a", 0.85).location)
  before = without_decisions(backend.files())
  record = backend.promote(backend.candidate("b", 0.84).location)
  files = backend.files()
  assert not record["promoted"] and "not better" in record["reason"]
  assert record["model_id"] is None and record["model_path"] is None
  assert record["production_model_id"] == first["model_id"]
  assert (record["candidate_test_accuracy"], record["production_test_accuracy"]) == (0.84, 0.85)
  assert without_decisions(files) == before
  assert decisions(files) == [first, record]


def test_better_candidate_is_promoted_and_the_previous_model_kept(backend):
  """A higher accuracy takes the pointer; the previous model stays where it was."""
  old_export, new_export = backend.candidate("a", 0.85), backend.candidate("b", 0.86)
  first = backend.promote(old_export.location)
  second = backend.promote(new_export.location)
  files = backend.files()
  assert second["promoted"] and second["production_model_id"] == first["model_id"]
  assert pointer(files)["model_id"] == second["model_id"] != first["model_id"]
  assert model_ids(files) == {first["model_id"], second["model_id"]}
  assert model(files, first["model_id"]) == old_export.files
  assert model(files, second["model_id"]) == new_export.files


@pytest.mark.parametrize("production_accuracy,candidate_accuracy,min_improvement,promoted", [
    (0.85, 0.85, 0.0, False),  # Equal is not better.
    (0.85, 0.8501, 0.0, True),
    (0.85, 0.859, 0.01, False),
    (0.2, 0.3, 0.1, True),  # 0.3 - 0.2 < 0.1 in floating point: exactly the minimum still wins.
    (0.85, 0.95, 0.2, False),
])
def test_min_improvement_is_respected(tmp_path, production_accuracy, candidate_accuracy,
                                      min_improvement, promoted):
  """Promoted exactly when strictly better by at least min_improvement (up to float rounding)."""
  backend = LocalBackend(tmp_path)
  backend.promote(backend.candidate("a", production_accuracy).location)
  record = backend.promote(backend.candidate("b", candidate_accuracy).location,
                           min_improvement=min_improvement)
  assert record["promoted"] == promoted
  assert record["min_improvement"] == min_improvement
  assert pointer(backend.files())["test_accuracy"] == (candidate_accuracy if promoted
                                                       else production_accuracy)


def test_every_decision_is_logged_with_both_scores(backend):
  """One record per decision, in order, with both scores, the candidate, time and reason."""
  accuracies = [0.80, 0.82, 0.81, 0.82, 0.90]
  exports = [backend.candidate(f"c{i}", accuracy) for i, accuracy in enumerate(accuracies)]
  records = [backend.promote(export.location) for export in exports]
  logged = decisions(backend.files())
  assert logged == records
  assert [r["promoted"] for r in logged] == [True, True, False, False, True]
  assert [r["candidate_test_accuracy"] for r in logged] == accuracies
  assert [r["production_test_accuracy"] for r in logged] == [None, 0.80, 0.82, 0.82, 0.82]
  assert [r["candidate"] for r in logged] == [export.location for export in exports]
  assert all(r["reason"] and r["time"].endswith("Z") for r in logged)
  assert [r["time"] for r in logged] == sorted(r["time"] for r in logged)


def test_a_failed_copy_leaves_production_untouched(backend, monkeypatch):
  """A copy that fails midway leaves no partial model, no switch and no decision."""
  backend.promote(backend.candidate("a", 0.85).location)
  before = backend.files()
  backend.fail_model_copies_after_one_file(monkeypatch)
  with pytest.raises(Exception, match="simulated"):
    backend.promote(backend.candidate("b", 0.9).location)
  assert backend.files() == before  # No partial copy, no pointer switch, no decision.


def test_the_copy_is_complete_before_the_pointer_switches(backend, monkeypatch):
  """When the pointer switches, every file of the new model is already in production."""
  seen_at_switch = []
  for store_class in (promote._LocalStore, promote._GcsStore):  # pylint: disable=protected-access

    def replace_if(store, name, data, token, real=store_class.replace_if):
      """Notes the production files, then switches."""
      seen_at_switch.append((json.loads(data)["model_id"], backend.files()))
      return real(store, name, data, token)

    monkeypatch.setattr(store_class, "replace_if", replace_if)
  export = backend.candidate("a", 0.85)
  record = backend.promote(export.location)
  [(model_id, files)] = seen_at_switch
  assert model_id == record["model_id"] and "CURRENT.json" not in files
  assert model(files, model_id) == export.files


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
  replace_if = promote._LocalStore.replace_if  # pylint: disable=protected-access
  waited = []

  def replace_if_after_barrier(store, name, data, token):
    """The real compare-and-swap, once every racer has read the old pointer."""
    if not waited:
      waited.append(barrier.wait())
    return replace_if(store, name, data, token)

  promote._LocalStore.replace_if = replace_if_after_barrier  # pylint: disable=protected-access
  results.put(promote.promote(candidate, production))


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
  assert loser["promoted"] == (loser["candidate_test_accuracy"] == 0.91)
  assert pointer(files)["test_accuracy"] == 0.91
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


@pytest.fixture
def emulator(monkeypatch):
  """gcp-storage-emulator on 127.0.0.1, named by STORAGE_EMULATOR_HOST (no preconditions)."""
  with socket.socket() as probe:
    probe.bind(("127.0.0.1", 0))
    port = probe.getsockname()[1]
  server = emulator_server.create_server("127.0.0.1", port, in_memory=True)
  server.start()
  monkeypatch.setenv("STORAGE_EMULATOR_HOST", f"http://127.0.0.1:{port}")
  yield
  server.stop()


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
  records = [promote.promote(f"gs://exports/{name}", "gs://production/imdb") for name in "abc"]
  assert [r["promoted"] for r in records] == [True, False, True]
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


# --- Bad input.


def _no_metadata(tmp_path):
  """An export without export_metadata.json."""
  write_export(str(tmp_path / "export"), 0.9)
  os.remove(tmp_path / "export" / "export_metadata.json")


def _no_saved_model(tmp_path):
  """An export without saved_model.pb."""
  write_export(str(tmp_path / "export"), 0.9)
  os.remove(tmp_path / "export" / "saved_model.pb")


def _metadata(text):
  """An export whose export_metadata.json holds `text`."""

  def write(tmp_path):
    """Writes the export, then replaces its metadata."""
    write_export(str(tmp_path / "export"), 0.9)
    (tmp_path / "export" / "export_metadata.json").write_text(text)

  return write


def _valid_export_and_pointer(text):
  """A valid export, and a production whose CURRENT.json holds `text`."""

  def write(tmp_path):
    """Writes the export and the pointer."""
    write_export(str(tmp_path / "export"), 0.9)
    (tmp_path / "production").mkdir()
    (tmp_path / "production" / "CURRENT.json").write_text(text)

  return write


def _valid_export(tmp_path):
  """A valid export."""
  write_export(str(tmp_path / "export"), 0.9)


def _production_is_a_file(tmp_path):
  """A valid export, and a file where production should be."""
  _valid_export(tmp_path)
  (tmp_path / "production").write_text("not a folder")


@pytest.mark.parametrize("make_input,candidate,production,min_improvement,message", [
    (lambda tmp_path: None, "export", "production", 0.0, "nothing is there"),
    (_no_metadata, "export", "production", 0.0, "not an export of this project"),
    (_no_saved_model, "export", "production", 0.0, "has no saved_model.pb"),
    (_metadata("{not json"), "export", "production", 0.0, "is not valid JSON"),
    (_metadata("[1]"), "export", "production", 0.0, "holds no JSON object"),
    (_metadata('{"format": "other"}'), "export", "production", 0.0, "is not 'imdb-bilstm"),
    (_metadata('{"format": "imdb-bilstm-export", "format_version": 1, "version": "7", '
               '"test": {"accuracy": 1.5}}'), "export", "production", 0.0, "test.accuracy"),
    (_metadata('{"format": "imdb-bilstm-export", "format_version": 1, "version": "../x", '
               '"test": {"accuracy": 0.9}}'), "export", "production", 0.0, "not a folder name"),
    (_valid_export_and_pointer("{truncated"), "export", "production", 0.0,
     "CURRENT.json is not valid JSON"),
    (_valid_export_and_pointer('{"test_accuracy": 0.9}'), "export", "production", 0.0,
     "names no model_id"),
    (_valid_export_and_pointer('{"model_id": "m", "test_accuracy": "high"}'), "export",
     "production", 0.0, "no test_accuracy"),
    (_valid_export, "export", "production", -0.01, "--min_improvement=-0.01: use a number >= 0"),
    (_valid_export, "export", "production", float("nan"), "--min_improvement=nan"),
    (_valid_export, "export", "export/production", 0.0, "is inside the candidate"),
    (_production_is_a_file, "export", "production", 0.0, "is a file: pass a directory"),
    (_valid_export, "export", "s3://bucket/production", 0.0, "use a local path or gs://"),
    (_valid_export, "export", "gs://", 0.0, "name a bucket"),
])
def test_bad_input_is_named_with_its_fix(tmp_path, make_input, candidate, production,
                                         min_improvement, message):
  """Each bad input raises UserInputError naming it, and nothing is written or removed."""
  make_input(tmp_path)
  before = read_tree(tmp_path)
  production = production if "://" in production else str(tmp_path / production)
  with pytest.raises(UserInputError, match=re.escape(message)):
    promote.promote(str(tmp_path / candidate), production, min_improvement,
                    gcs_client=fake_gcs.FakeClient())
  assert read_tree(tmp_path) == before  # Nothing written, nothing removed.


def test_corrupt_pointer_error_says_how_to_recover(tmp_path):
  """A corrupt CURRENT.json error points at the decision log and at deleting it."""
  _valid_export_and_pointer("{")(tmp_path)
  with pytest.raises(UserInputError) as error:
    promote.promote(str(tmp_path / "export"), str(tmp_path / "production"))
  assert "delete it" in str(error.value) and "decisions" in str(error.value)


# --- Command line.


def run_cli(*args):
  """Runs python -m trainer.promote with these arguments."""
  return subprocess.run([sys.executable, "-m", "trainer.promote", *args], capture_output=True,
                        text=True, timeout=120, check=False,
                        env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"})


def test_cli_prints_the_decision_and_exits_0_promoted_or_refused_2_on_bad_input(tmp_path):
  """The CLI prints one JSON line and exits 0 on promotion and refusal, 2 on bad input."""
  backend = LocalBackend(tmp_path)
  better, worse = backend.candidate("a", 0.9), backend.candidate("b", 0.8)
  production = f"--production={backend.production}"
  outcomes = []
  for export in (better, worse):
    result = run_cli(f"--candidate={export.location}", production, "--min_improvement=0.01")
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert len(lines) == 1
    outcomes.append(json.loads(lines[0]))
  assert [o["promoted"] for o in outcomes] == [True, False]
  assert decisions(backend.files()) == outcomes
  bad = run_cli(f"--candidate={tmp_path / 'missing'}", production)
  assert bad.returncode == 2 and not bad.stdout
  assert "error: Candidate" in bad.stderr and "nothing is there" in bad.stderr
