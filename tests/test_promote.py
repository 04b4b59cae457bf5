"""Tests of trainer.serving.promote: deciding, bad input and the command line, local and on GCS."""

import json
import os
import re
import subprocess
import sys

import pytest

from tests import fake_gcs
from tests.promote_testing import backend  # pylint: disable=unused-import  (a fixture)
from tests.promote_testing import decisions
from tests.promote_testing import LocalBackend
from tests.promote_testing import model
from tests.promote_testing import model_ids
from tests.promote_testing import pointer
from tests.promote_testing import read_tree
from tests.promote_testing import without_decisions
from tests.promote_testing import write_export
from trainer.errors import UserInputError
from trainer.serving import promote
from trainer import storage


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
  for store_class in (storage.LocalStore, storage.GcsStore):

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
