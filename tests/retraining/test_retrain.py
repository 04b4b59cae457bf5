"""Scheduled retraining on generated data: same reviews for both models, the gates, two workers."""

import json
import os
import subprocess
import sys

import keras
import numpy as np
import pytest

from trainer import config as config_lib
from trainer.data import sources
from trainer import errors
from trainer.errors import UserInputError
from trainer.modeling import model as model_lib
from trainer.retraining import retrain_lib
from trainer.serving import evaluation
from trainer.serving import export
from trainer.serving import promote
from trainer.testing.cluster import CLUSTER_VARIABLES
from trainer.testing.cluster import free_port_prefix
from trainer.testing import synthetic_imdb

pytestmark = pytest.mark.slow  # Every test here trains, spawns processes or runs Beam.

# Learns the generated sentiment words in a few seconds; deterministic, so reruns repeat.
# Its validation split (a fifth of the train movies, 4 reviews each) has the 8 movies or more that
# the data gate's drift checks need.
LEARNS = config_lib.override(config_lib.get_preset("local"), max_length=40, eval_batch_size=64,
                             epochs=4.0, deterministic=True, validation_fraction=0.2)
TIMEOUT_SECONDS = 300
# The latency budget of these tests: the gate's own test is the one that must refuse.
POLICY = promote.Policy(max_latency_ms=500.0)


def generated_tarball(directory, seed, positive_share=0.5):
  """A tarball of 100 generated reviews per folder (movies of 4: 2 positive, 2 negative);
  `positive_share` of the train reviews positive."""
  files = synthetic_imdb.generate(reviews_per_folder=100, reviews_per_movie=2, median_words=30,
                                  seed=seed)
  positives = sorted(name for name in files if "/train/pos/" in name)
  keep = round(len(positives) * positive_share / (1 - positive_share)) if positive_share < 0.5 \
      else len(positives)
  files = {name: data for name, data in files.items() if name not in positives[keep:]}
  return synthetic_imdb.write_tarball(files, os.path.join(directory, f"imdb-{seed}.tar.gz"))


@pytest.fixture(scope="module")
def scheduled(tmp_path_factory):
  """A first scheduled run (promoted into empty production) and the folders it used."""
  root = tmp_path_factory.mktemp("scheduled")
  tarball = generated_tarball(str(root), seed=2)
  folders = {name: str(root / name) for name in ("data", "runs", "production")}
  first = retrain_lib.retrain(LEARNS, sources.read_tarball(tarball), folders["data"],
                              os.path.join(folders["runs"], "first"), folders["production"],
                              POLICY)
  return {"root": root, "tarball": tarball, "first": first, **folders}


def rerun(scheduled, tarball, name, warm_start="", **gates):
  """Another scheduled run into the same production, on `tarball`."""
  config = config_lib.override(LEARNS, warm_start=warm_start)
  return retrain_lib.retrain(config, sources.read_tarball(tarball), scheduled["data"],
                             os.path.join(scheduled["runs"], name), scheduled["production"],
                             POLICY, retrain_lib.Gates(**gates))


def test_first_run_prepares_trains_exports_with_warmup_and_promotes(scheduled):
  """Into empty production: promoted, scored on the source's test split, served in a process."""
  first = scheduled["first"]
  decision = first["decision"]
  assert first["prepared"] and decision["verdict"] == "promoted"
  assert not first["data_gate"]["baseline"] and not first["data_gate"]["problems"]
  assert first["warm_start"] is None
  gate = json.loads(open(os.path.join(scheduled["runs"], "first", "data_gate.json")).read())
  assert gate == first["data_gate"] and gate["production_model_id"] is None
  held_out = evaluation.test_split(sources.read_tarball(scheduled["tarball"]))
  assert decision["examples"] == held_out.examples == 200
  assert decision["data"]["fingerprint"] == held_out.fingerprint
  assert decision["serving"]["loaded"] and decision["serving"]["warmup_requests"] == 4
  assert decision["serving"]["latency_ms_p99"] > 0 and decision["serving"]["reviews_per_s"] > 0
  assert decision["candidate_accuracy"] > 0.8  # The generated sentiment words were learned.
  assert os.path.exists(os.path.join(first["export"], "assets.extra",
                                     "tf_serving_warmup_requests"))
  summary = json.loads(open(os.path.join(scheduled["runs"], "first", "retrain.json")).read())
  assert summary["decision"] == decision


def test_same_data_again_is_refused_and_new_data_rescores_production(scheduled, tmp_path):
  """Rerun on the same source: the same answers, p = 1, refused. On a changed source, the
  production model is scored again on the new test split: its stored number plays no part."""
  again = rerun(scheduled, scheduled["tarball"], "again")
  assert not again["prepared"] and again["data_dir"] == scheduled["first"]["data_dir"]
  decision = again["decision"]
  assert decision["verdict"] == "refused" and "not better" in decision["reason"]
  assert decision["p_value_better"] == 1.0 and decision["test"] == "mcnemar_exact_one_sided"
  assert decision["bootstrap"]["p_value_better"] == 1.0 and decision["bootstrap"]["clusters"] == 50
  assert again["data_gate"]["production_model_id"] == scheduled["first"]["decision"]["model_id"]
  assert decision["candidate_accuracy"] == decision["production_accuracy"]
  changed = generated_tarball(str(tmp_path), seed=7)
  try:
    rerun(scheduled, changed, "changed")
  except errors.Regression:
    pass  # A model of 160 other reviews may well be worse: the verdict is not the point here.
  other = json.loads(open(os.path.join(scheduled["runs"], "changed", "retrain.json")).read())
  assert other["prepared"] and other["data_dir"] != scheduled["first"]["data_dir"]
  held_out = evaluation.test_split(sources.read_tarball(changed))
  production_model = os.path.join(scheduled["production"], "models",
                                  scheduled["first"]["decision"]["model_id"])
  rescored = evaluation.correct_answers(production_model, held_out).mean()
  assert other["decision"]["data"]["fingerprint"] == held_out.fingerprint
  assert other["decision"]["production_accuracy"] == pytest.approx(rescored)
  assert other["decision"]["examples"] == held_out.examples
  # The same generator, other reviews: production's view of them is within the noise.
  drift = {(check["split"], check["statistic"]) for check in other["data_gate"]["checks"]
           if "noise" in check}
  assert ("test", "score_histogram") in drift and ("train", "token_histogram") in drift
  assert other["data_gate"]["problems"] == [] and other["data_gate"]["notes"] == []


def test_warm_start_from_production_when_the_vocabulary_matches(scheduled, tmp_path):
  """--warm_start=production starts from the production model's weights: its first validation is
  as good as production's. On a source with another vocabulary it is refused before training."""
  warm = rerun(scheduled, scheduled["tarball"], "warm", warm_start="production")
  production_model = os.path.join(scheduled["production"], "models",
                                  scheduled["first"]["decision"]["model_id"])
  assert warm["warm_start"] == production_model
  history = json.loads(open(os.path.join(scheduled["runs"], "warm", "metrics.json")).read())[
      "history"]
  first_validation = next(record["validation"]["accuracy"] for record in history
                          if "validation" in record)
  production_validation = export.load_metadata(production_model)["validation"]["accuracy"]
  assert first_validation >= production_validation - 0.05
  with pytest.raises(UserInputError, match="the vocabulary differs at"):
    rerun(scheduled, generated_tarball(str(tmp_path), seed=7), "warm-changed",
          warm_start="production")


def test_drifted_data_is_refused_before_training_unless_allowed(scheduled, tmp_path):
  """A source with 20% positive train reviews: exit-4 error naming the shift; nothing trained."""
  skewed = generated_tarball(str(tmp_path), seed=2, positive_share=0.2)
  with pytest.raises(errors.DataDrift, match=r"train: positive reviews 1\d\.\d% vs 50\.0%"):
    rerun(scheduled, skewed, "skewed")
  summary = json.loads(open(os.path.join(scheduled["runs"], "skewed", "retrain.json")).read())
  assert summary["data_gate"]["problems"] and "decision" not in summary
  assert not os.path.exists(os.path.join(scheduled["runs"], "skewed", "checkpoints"))
  # Allowed, it trains; on these skewed reviews the model learns worse, and the alert says so.
  with pytest.raises(errors.Regression, match="significantly worse"):
    rerun(scheduled, skewed, "skewed", allow_data_drift=True)
  summary = json.loads(open(os.path.join(scheduled["runs"], "skewed", "retrain.json")).read())
  assert summary["data_gate"]["problems"] and summary["decision"]["verdict"] == "regression"


def constant_export(directory, data_dir, config=LEARNS):
  """An export of a model that calls every review negative (all weights zero, bias -5)."""
  vocabulary = [line.rstrip("\n") for line in open(os.path.join(data_dir, "vocab.txt"))]
  keras.utils.set_random_seed(0)
  weights = [np.zeros_like(w) for w in model_lib.build_model(config).get_weights()]
  weights[-1] = np.full_like(weights[-1], -5.0)
  classifier = export.build_classifier(config, weights, vocabulary)
  return export.export(classifier, directory, {"test": {"accuracy": 0.5}})


def run_promote(*args):
  """python -m trainer.promote with these arguments: (exit code, decision record or None)."""
  completed = subprocess.run([sys.executable, "-m", "trainer.promote", "--max_latency_ms=500",
                              *args],
                             capture_output=True, text=True, timeout=TIMEOUT_SECONDS, check=False,
                             env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"})
  lines = completed.stdout.splitlines()
  return completed.returncode, (json.loads(lines[-1]) if lines else completed.stderr)


def test_promote_command_on_real_exports_better_worse_and_unservable(scheduled, tmp_path):
  """Clearly better is promoted (0), clearly worse raises the regression alert (3), an export
  that cannot load or is too slow is refused by the serving gate (5), production's own export is
  refused without scoring (0); a rollback to a model that serves switches (0)."""
  production = f"--production={tmp_path / 'production'}"
  source = f"--input={scheduled['tarball']}"
  constant = constant_export(str(tmp_path / "constant"), scheduled["first"]["data_dir"])
  trained = scheduled["first"]["export"]
  code, first = run_promote(f"--candidate={constant}", production, source)
  assert (code, first["verdict"]) == (0, "promoted"), first
  code, slow = run_promote(f"--candidate={trained}", production, source, "--max_latency_ms=0.01")
  assert (code, slow["verdict"]) == (errors.SERVING_GATE_EXIT_CODE, "not_served"), slow
  code, better = run_promote(f"--candidate={trained}", production, source)
  assert (code, better["verdict"]) == (0, "promoted"), better
  assert better["production_accuracy"] == 0.5 and better["p_value_better"] < 1e-6
  code, worse = run_promote(f"--candidate={constant}", production, source)
  assert (code, worse["verdict"]) == (errors.REGRESSION_EXIT_CODE, "regression"), worse
  code, again = run_promote(f"--candidate={trained}", production, source)  # Not scored again.
  assert (code, again["verdict"], again["candidate_accuracy"]) == (0, "refused", None), again
  assert "production model already" in again["reason"]
  broken = str(tmp_path / "broken")  # Not production's export, which would not be scored.
  export_files = os.path.join(constant, "variables")
  subprocess.run(["cp", "-r", constant, broken], check=True)
  for name in os.listdir(export_files):
    if name.startswith("variables.data"):
      with open(os.path.join(broken, "variables", name), "r+b") as f:
        f.truncate(16)
  code, unloadable = run_promote(f"--candidate={broken}", production, source)
  assert (code, unloadable["verdict"]) == (errors.SERVING_GATE_EXIT_CODE, "not_served")
  assert "could not be served" in unloadable["reason"]
  current = json.loads((tmp_path / "production" / "CURRENT.json").read_text())
  assert current["model_id"] == better["model_id"]
  code, back = run_promote(production, "--rollback")  # Both exports serve: switched.
  assert (code, back["verdict"], back["model_id"]) == (0, "rolled_back", first["model_id"])
  assert back["serving"]["loaded"]
  code, again = run_promote(production, f"--rollback={better['model_id']}")
  assert (code, again["model_id"]) == (0, better["model_id"])


def test_two_workers_retrain_end_to_end_on_loopback(tmp_path, scheduled):
  """Both workers of an Indexed Job run retrain: the chief prepares while the other waits, both
  train, the chief promotes; both exit 0."""
  prefix = free_port_prefix()
  env = {name: value for name, value in os.environ.items() if name not in CLUSTER_VARIABLES}
  env.update({"TRAINER_NUM_WORKERS": "2", "CUDA_VISIBLE_DEVICES": "", "TF_CPP_MIN_LOG_LEVEL": "2",
              "TRAINER_WORKER_ADDRESS_TEMPLATE": f"127.0.0.1:{prefix}{{index}}"})
  args = [sys.executable, "-m", "trainer.retrain", f"--input={scheduled['tarball']}",
          "--preset=local", "--max_length=40", "--deterministic", "--cluster_wait_seconds=120",
          f"--data_cache={tmp_path / 'data'}", f"--runs_dir={tmp_path / 'runs'}",
          "--run_name=together", f"--production={tmp_path / 'production'}",
          "--data_wait_seconds=240", "--max_latency_ms=500"]
  workers = [subprocess.Popen(args, env={**env, "JOB_COMPLETION_INDEX": str(index)},
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
             for index in (1, 0)]
  try:
    outputs = [worker.communicate(timeout=TIMEOUT_SECONDS)[0] for worker in workers]
  finally:
    for worker in workers:
      worker.kill()
      worker.wait()
  for worker, output in zip(workers, outputs):
    assert worker.returncode == 0, output[-3000:]
  assert "The chief prepared" in outputs[0]
  summary = json.loads((tmp_path / "runs" / "together" / "retrain.json").read_text())
  assert summary["decision"]["verdict"] == "promoted" and summary["prepared"]
  assert json.loads((tmp_path / "runs" / "together" / "metrics.json").read_text())[
      "strategy"]["workers"] == 2
