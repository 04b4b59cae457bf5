"""Tests of trainer.serving.promote: deciding, bad input and the command line, local and on GCS."""

import json
import os
import re
import shutil
import subprocess
import sys

import pytest

from tests import fake_gcs
from tests.serving.promote_testing import backend  # pylint: disable=unused-import  (a fixture)
from tests.serving.promote_testing import decisions
from tests.serving.promote_testing import FAKE_REVIEWS
from tests.serving.promote_testing import FakeAssessor
from tests.serving.promote_testing import GcsBackend
from tests.serving.promote_testing import LocalBackend
from tests.serving.promote_testing import model
from tests.serving.promote_testing import model_ids
from tests.serving.promote_testing import pointer
from tests.serving.promote_testing import read_tree
from tests.serving.promote_testing import SERVED
from tests.serving.promote_testing import without_decisions
from tests.serving.promote_testing import write_export
from trainer import errors
from trainer.errors import UserInputError
from trainer.serving import promote
from trainer.serving import significance
from trainer import storage


# --- Deciding.


def test_first_candidate_is_promoted(backend):
  """With no production model, the candidate is copied in full and the pointer names it."""
  export = backend.candidate("a", 0.85)
  record = backend.promote(export.location)
  files = backend.files()
  assert record["verdict"] == "promoted" and record["reason"] == "no production model yet"
  assert record["production_model_id"] is None and record["production_accuracy"] is None
  assert record["p_value_better"] is None and record["candidate_accuracy"] == 0.85
  assert record["bootstrap"] is None and record["underpowered"] is None
  assert record["examples"] == FAKE_REVIEWS and record["data"] == FakeAssessor.data
  assert record["serving"] == SERVED and record["model_id"].startswith("1795903751-")
  current = pointer(files)
  assert current["model_id"] == record["model_id"] and current["history"] == []
  assert current["path"] == record["model_path"] == backend.location(f"models/{record['model_id']}")
  assert current["accuracy"] == 0.85 and current["candidate"] == export.location
  assert model(files, record["model_id"]) == export.files
  assert decisions(files) == [record]


def test_significantly_worse_candidate_is_a_regression_and_production_untouched(backend):
  """Worse on the same reviews beyond noise: the verdict is regression; nothing changes."""
  first = backend.promote(backend.candidate("a", 0.85).location)
  before = without_decisions(backend.files())
  record = backend.promote(backend.candidate("b", 0.84).location)
  files = backend.files()
  assert record["verdict"] == "regression" and "significantly worse" in record["reason"]
  assert record["model_id"] is None and record["model_path"] is None
  assert record["production_model_id"] == first["model_id"]
  assert (record["candidate_accuracy"], record["production_accuracy"]) == (0.84, 0.85)
  assert (record["candidate_only_correct"], record["production_only_correct"]) == (0, 20)
  assert record["p_value_worse"] == significance.upper_tail(20, 20) == 2**-20
  assert record["p_value_better"] == 1.0 and record["test"] == "mcnemar_exact_one_sided"
  assert without_decisions(files) == before
  assert decisions(files) == [first, record]
  with pytest.raises(errors.Regression, match="Regression alert"):
    promote.raise_alerts(record)


def test_better_candidate_is_promoted_and_the_previous_model_kept(backend):
  """Significantly better takes the pointer; the previous model stays, named in the history."""
  old_export, new_export = backend.candidate("a", 0.85), backend.candidate("b", 0.86)
  first = backend.promote(old_export.location)
  second = backend.promote(new_export.location)
  files = backend.files()
  assert second["verdict"] == "promoted" and second["production_model_id"] == first["model_id"]
  assert pointer(files)["model_id"] == second["model_id"] != first["model_id"]
  assert pointer(files)["history"] == [first["model_id"]]
  assert model_ids(files) == {first["model_id"], second["model_id"]}
  assert model(files, first["model_id"]) == old_export.files
  assert model(files, second["model_id"]) == new_export.files


@pytest.mark.parametrize("production,candidate,shift,policy,verdict,b,c", [
    (0.85, 0.85, 0, {}, "refused", 0, 0),  # The same answers: not better.
    (0.85, 0.85, 300, {}, "refused", 300, 300),  # Other answers, same accuracy: noise.
    (0.85, 0.86, 300, {}, "refused", 300, 280),  # Better by 1 point, p = 0.43: noise.
    (0.85, 0.84, 300, {}, "refused", 280, 300),  # Worse within noise: no alert.
    (0.85, 0.86, 0, {}, "promoted", 20, 0),
    (0.85, 0.852, 0, {}, "refused", 4, 0),  # p = 1/16 = 0.0625.
    (0.85, 0.852, 0, {"max_p_value": 0.2}, "promoted", 4, 0),
    (0.85, 0.8525, 0, {}, "promoted", 5, 0),  # p = 1/32 (two-sided, 1/16 refused it).
    (0.85, 0.86, 0, {"min_improvement": 0.01}, "promoted", 20, 0),  # Detectable: 0.6 points.
    (0.85, 0.859, 0, {"min_improvement": 0.01}, "refused", 18, 0),
    (0.2, 0.3, 0, {"min_improvement": 0.1}, "promoted", 200, 0),  # Exactly the minimum wins.
    (0.85, 0.80, 0, {}, "regression", 0, 100),
])
def test_promoted_only_when_better_by_min_improvement_and_significantly(
    tmp_path, production, candidate, shift, policy, verdict, b, c):
  """The verdict follows min_improvement and McNemar's p on the same reviews, not accuracy."""
  backend = LocalBackend(tmp_path)
  backend.promote(backend.candidate("a", production).location)
  record = backend.promote(backend.candidate("b", candidate, shift=shift).location, **policy)
  assert record["verdict"] == verdict and record["promoted"] == (verdict == "promoted")
  assert (record["candidate_only_correct"], record["production_only_correct"]) == (b, c)
  assert record["p_value_better"] == significance.upper_tail(b + c, b)
  assert record["p_value_worse"] == significance.upper_tail(b + c, c)
  assert record["detectable_difference"] == significance.detectable_difference(
      b, c, FAKE_REVIEWS, record["max_p_value"])
  assert record["bootstrap"]["clusters"] == 200 and not record["underpowered"]
  assert record["min_improvement"] == policy.get("min_improvement", 0.0)
  assert record["max_p_value"] == policy.get("max_p_value", 0.05)
  assert pointer(backend.files())["accuracy"] == (candidate if verdict == "promoted"
                                                  else production)


def test_too_few_reviews_to_detect_min_improvement_is_refused_saying_so(tmp_path):
  """Better by 1 point, p = 2^-20; but with 20 disagreements of 2,000 reviews the test detects
  only 0.597 points or more with power 0.8: not enough to judge a min_improvement of 0.5 points."""
  backend = LocalBackend(tmp_path)
  backend.promote(backend.candidate("a", 0.85).location)
  record = backend.promote(backend.candidate("b", 0.86).location, min_improvement=0.005)
  assert record["verdict"] == "refused" and record["underpowered"]
  assert "too few to tell min_improvement 0.5000% from chance" in record["reason"]
  assert "with 20 disagreements the test detects 0.60% or more with power 0.8 at p < 0.05" in (
      record["reason"])
  assert record["detectable_difference"] == pytest.approx(0.00597, abs=1e-5)
  assert record["power"] == 0.8 and record["alpha"] == 0.05


def test_a_gain_within_a_few_movies_is_not_promoted(tmp_path):
  """The 20 reviews only the candidate gets right are two whole movies (of 200): McNemar, which
  takes them as independent, says p = 2^-20; resampling movies, neither of the two is drawn a
  (1 - 2/200)^200 = 13% of the time: not significant."""
  backend = LocalBackend(tmp_path)
  backend.promote(backend.candidate("a", 0.85).location)
  record = backend.promote(backend.candidate("b", 0.86).location,
                           assessor=FakeAssessor(movies_in_runs=True))
  assert record["verdict"] == "refused" and record["p_value_better"] == 2**-20
  assert record["bootstrap"]["p_value_better"] == pytest.approx(0.134, abs=0.03)
  assert "significantly by McNemar but not over movies" in record["reason"]
  spread = backend.promote(backend.candidate("c", 0.86).location)  # The same, over 20 movies.
  assert spread["verdict"] == "promoted" and spread["bootstrap"]["p_value_better"] < 0.001


def test_every_decision_is_logged_with_both_scores(backend):
  """One record per decision, in order, with both scores, the candidate, time and reason."""
  accuracies = [0.80, 0.82, 0.81, 0.82, 0.90]
  exports = [backend.candidate(f"c{i}", accuracy) for i, accuracy in enumerate(accuracies)]
  records = [backend.promote(export.location) for export in exports]
  logged = decisions(backend.files())
  assert logged == records
  assert [r["verdict"] for r in logged] == ["promoted", "promoted", "regression", "refused",
                                            "promoted"]
  assert [r["candidate_accuracy"] for r in logged] == accuracies
  assert [r["production_accuracy"] for r in logged] == [None, 0.80, 0.82, 0.82, 0.82]
  assert [r["candidate"] for r in logged] == [export.location for export in exports]
  assert all(r["reason"] and r["time"].endswith("Z") for r in logged)
  assert [r["time"] for r in logged] == sorted(r["time"] for r in logged)


@pytest.mark.parametrize("serving,reason", [
    ({"loaded": False, "error": "OSError: truncated saved_model.pb"}, "could not be served"),
    ({**SERVED, "latency_ms_p99": 80.0}, "80.0 ms at p99, over max_latency_ms 50"),
])
def test_a_candidate_that_does_not_serve_is_not_promoted(backend, serving, reason):
  """Failing to load or answering too slowly is refused before any scoring, and alerts."""
  first = backend.promote(backend.candidate("a", 0.80).location)
  before = without_decisions(backend.files())
  record = backend.promote(backend.candidate("b", 0.95, serving=serving).location)
  assert record["verdict"] == "not_served" and reason in record["reason"]
  assert record["examples"] is None and record["candidate_accuracy"] is None  # Not scored.
  assert record["serving"] == serving and record["production_model_id"] == first["model_id"]
  assert without_decisions(backend.files()) == before
  with pytest.raises(errors.ServingGateFailed, match=re.escape(reason)):
    promote.raise_alerts(record)


def test_rollback_walks_back_through_the_models_replaced_and_to_any_kept_model(backend):
  """--rollback goes to the model the current one replaced, again and again; or to an id."""
  a, b, c = (backend.promote(backend.candidate(name, accuracy).location)["model_id"]
             for name, accuracy in (("a", 0.80), ("b", 0.85), ("c", 0.90)))
  steps = [backend.rollback(), backend.rollback()]
  assert [(r["production_model_id"], r["model_id"]) for r in steps] == [(c, b), (b, a)]
  assert all(r["verdict"] == "rolled_back" for r in steps)
  assert pointer(backend.files())["model_id"] == a and pointer(backend.files())["history"] == []
  with pytest.raises(UserInputError, match="records no model before"):
    backend.rollback()
  assert backend.rollback(c)["model_id"] == c
  assert pointer(backend.files())["history"] == [a]
  assert backend.rollback()["model_id"] == a
  with pytest.raises(UserInputError, match=re.escape("no such model")):
    backend.rollback("1795903751-00000000")
  assert model_ids(backend.files()) == {a, b, c}
  assert [r["verdict"] for r in decisions(backend.files())] == ["promoted"] * 3 + [
      "rolled_back"] * 4


def test_a_failed_copy_leaves_production_untouched(backend, monkeypatch):
  """A copy that fails midway leaves no partial model, no switch and no decision."""
  backend.promote(backend.candidate("a", 0.85).location)
  before = backend.files()
  backend.fail_model_copies_after_one_file(monkeypatch)
  with pytest.raises(Exception, match="simulated"):
    backend.promote(backend.candidate("b", 0.9).location)
  assert backend.files() == before  # No partial copy, no pointer switch, no decision.


class _Killed(BaseException):
  """The process died: nothing after it runs, not even clean-up."""


def test_a_copy_killed_half_way_is_never_listed_nor_rolled_back_to(tmp_path):
  """GCS has no folder rename: a promotion killed while it copies leaves part of a model in
  models/. saved_model.pb is copied last, so the part lacks it and no rollback can pick it."""
  backend = GcsBackend(tmp_path)
  first = backend.promote(backend.candidate("a", 0.85).location)
  second = backend.promote(backend.candidate("b", 0.9).location)
  copied = []

  def die_after_two_model_files(name):
    """Lets two writes under models/ through, then the process dies."""
    if "/models/" in name:
      if len(copied) == 2:
        raise _Killed()
      copied.append(name)

  backend.client.before_write = die_after_two_model_files
  backend.client.before_delete = lambda name: (_ for _ in ()).throw(_Killed())
  with pytest.raises(_Killed):
    backend.promote(backend.candidate("c", 0.95).location)
  backend.client.before_write = backend.client.before_delete = lambda name: None
  in_models = [name.split("/models/", 1)[1].split("/", 1) for name in copied]
  [partial] = {model_id for model_id, _ in in_models}
  assert {file for _, file in in_models} == {"export_metadata.json",
                                             "variables/variables.data-00000-of-00001"}
  assert partial not in {first["model_id"], second["model_id"]}
  with pytest.raises(UserInputError, match="no such model"):
    backend.rollback(partial)
  assert backend.rollback()["model_id"] == first["model_id"]


def test_a_leftover_local_temporary_copy_is_never_listed(tmp_path):
  """A local copy killed before its rename leaves a .tmp- folder: never a model to roll to."""
  backend = LocalBackend(tmp_path)
  backend.promote(backend.candidate("a", 0.85).location)
  leftover = f"{backend.candidate('b', 0.9).location}"
  shutil.copytree(leftover, backend.location("models/1795903751-ffffffff" +
                                             storage.TEMP_MARKER + "0123"))
  with pytest.raises(UserInputError, match="no such model"):
    backend.rollback("1795903751-ffffffff" + storage.TEMP_MARKER + "0123")


def test_a_rollback_target_that_does_not_serve_is_not_switched_to(backend):
  """Rolling back to a model that fails the serving gate leaves production as it is, logged
  as not_served."""
  backend.promote(backend.candidate("a", 0.8).location)
  backend.promote(backend.candidate("b", 0.9).location)
  current = pointer(backend.files())
  record = promote.rollback(backend.production,
                            serving=lambda model_dir: {"loaded": False, "error": "boom"},
                            gcs_client=getattr(backend, "client", None))
  assert record["verdict"] == "not_served" and "boom" in record["reason"]
  assert pointer(backend.files()) == current and decisions(backend.files())[-1] == record


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
    (_metadata('{"format": "imdb-bilstm-export", "format_version": 1, "version": "../x", '
               '"test": {"accuracy": 0.9}}'), "export", "production", 0.0, "not a folder name"),
    (_valid_export_and_pointer("{truncated"), "export", "production", 0.0,
     "CURRENT.json is not valid JSON"),
    (_valid_export_and_pointer('{"test_accuracy": 0.9}'), "export", "production", 0.0,
     "names no model_id"),
    (_valid_export_and_pointer('{"model_id": "m", "history": "a"}'), "export",
     "production", 0.0, "history is not a list of model ids"),
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
    promote.promote(str(tmp_path / candidate), production, FakeAssessor(),
                    promote.Policy(min_improvement=min_improvement),
                    gcs_client=fake_gcs.FakeClient())
  assert read_tree(tmp_path) == before  # Nothing written, nothing removed.


@pytest.mark.parametrize("min_improvement, message", [
    (-0.01, "min_improvement=-0.01: it cannot be negative"),
    (float("nan"), "min_improvement=nan"),
])
def test_a_policy_that_cannot_work_cannot_be_made(min_improvement, message):
  """The policy is checked once, when it is made (the flags name it: --min_improvement=...)."""
  with pytest.raises(ValueError, match=re.escape(message)):
    promote.Policy(min_improvement=min_improvement)


def test_corrupt_pointer_error_says_how_to_recover(tmp_path):
  """A corrupt CURRENT.json error points at the decision log and at deleting it."""
  _valid_export_and_pointer("{")(tmp_path)
  with pytest.raises(UserInputError) as error:
    promote.promote(str(tmp_path / "export"), str(tmp_path / "production"), FakeAssessor())
  assert "delete it" in str(error.value) and "decisions" in str(error.value)


# --- Command line.


def run_cli(*args):
  """Runs python -m trainer.promote with these arguments."""
  return subprocess.run([sys.executable, "-m", "trainer.promote", *args], capture_output=True,
                        text=True, timeout=120, check=False,
                        env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"})


@pytest.mark.slow
def test_cli_refuses_a_rollback_that_does_not_serve_and_exits_2_on_bad_input(tmp_path):
  """--rollback to a model that does not load (a fake export) prints the not_served record as
  one JSON line, exits 5 and leaves production; bad input exits 2 with one clear line. (A
  rollback that serves: tests/retraining/test_retrain.py, on real exports.)"""
  backend = LocalBackend(tmp_path)
  backend.promote(backend.candidate("a", 0.8).location)
  second = backend.promote(backend.candidate("b", 0.9).location)
  production = f"--production={backend.production}"
  result = run_cli(production, "--rollback")
  assert result.returncode == errors.SERVING_GATE_EXIT_CODE, result.stderr
  [line] = result.stdout.splitlines()
  record = json.loads(line)
  assert record["verdict"] == "not_served" and decisions(backend.files())[-1] == record
  assert pointer(backend.files())["model_id"] == second["model_id"]
  for args, message in (([production], "Pass --candidate"),
                        ([production, "--rollback=nope"], "no such model"),
                        ([production, f"--candidate={tmp_path}/x", "--max_p_value=0"],
                         "--max_p_value=0.0: use a value in (0, 1]")):
    bad = run_cli(*args)
    assert bad.returncode == 2 and not bad.stdout, bad.stderr
    assert message in bad.stderr
