"""The parts of retraining that need no training: its sentences, and where a warm start comes from."""

import json

from trainer import config as config_lib
from trainer.retraining import retrain_lib
from trainer import storage

SUMMARY = {
    "run_dir": "/runs/r1", "data_dir": "/data/abc", "prepared": False,
    "warm_start": "/production/models/17-ab",
    "data_gate": {
        "baseline": True, "problems": [],
        "notes": ["test: 5 movies sampled, 4 in production's baseline: fewer than 8 to measure "
                  "the noise, so no drift checks"],
        "checks": [{"split": "train", "statistic": "examples", "value": 1.0, "threshold": 0.5},
                   {"split": "train", "statistic": "oov_rate", "value": 0.001,
                    "threshold": 0.004, "noise": {}},
                   {"split": "train", "statistic": "token_histogram", "value": 0.03,
                    "threshold": 0.04, "noise": {}}]},
    "test": {"accuracy": 0.8912},
    "decision": {"verdict": "refused", "reason": "accuracy ...: not better", "examples": 25000,
                 "candidate_only_correct": 1200, "production_only_correct": 1150,
                 "detectable_difference": 0.0046, "power": 0.8, "alpha": 0.05,
                 "underpowered": True, "min_improvement": 0.002,
                 "bootstrap": {"clusters": 3456, "interval": [-0.001, 0.005],
                               "p_value_better": 0.21, "p_value_worse": 0.79},
                 "log": "/production/decisions/x.json"}}


def test_summary_lines_say_the_drift_the_warm_start_and_the_evidence():
  """One sentence each: the gate, its statistic closest to the threshold, what was not compared,
  the warm start, the decision and its evidence (power, bootstrap)."""
  lines = retrain_lib.summary_lines(SUMMARY)
  assert lines[0] == "Data: /data/abc (cached); data gate: passed."
  assert lines[1] == ("Drift: 2 statistics of production's view of the new reviews vs its "
                      "validation reviews, thresholds from their noise; closest to its "
                      "threshold: train token_histogram 0.0300 of 0.0400.")
  assert lines[2].startswith("Not compared: test: 5 movies sampled")
  assert lines[3] == ("Trained in /runs/r1 (from /production/models/17-ab): test accuracy "
                      "0.8912.")
  assert lines[4] == "Decision: refused: accuracy ...: not better."
  assert lines[5] == ("Evidence: on 25000 reviews, with 2350 disagreements the test detects "
                      "0.46% or more with power 0.8 at p < 0.05 (too few reviews for "
                      "min_improvement 0.20%); bootstrap over 3456 movies: difference -0.10% to "
                      "+0.50%, p = 0.21 better, 0.79 worse.")


def test_warm_start_from_production_resolves_to_its_model_once_per_run(tmp_path):
  """'production' becomes the current model's folder (nothing before the first one); a resumed
  run keeps the folder it started from, though a newer model is production by now."""
  production = storage.open_store(str(tmp_path / "production"))
  current = ("2-b", production.subfolder("models/2-b"), {})
  config = config_lib.override(config_lib.get_preset("local"), warm_start="production")
  run_dir = str(tmp_path / "run")
  resolve = retrain_lib._resolve_warm_start  # pylint: disable=protected-access
  assert resolve(config, None, run_dir).training.warm_start == ""
  assert resolve(config, current, run_dir).training.warm_start == production.location(
      "models/2-b")
  other = config_lib.override(config, warm_start="/exports/7")
  assert resolve(other, current, run_dir) == other
  (tmp_path / "run").mkdir()
  (tmp_path / "run" / "config.json").write_text(json.dumps(
      {"config": {"training": {"warm_start": production.location("models/1-a")}}}))
  assert resolve(config, current, run_dir).training.warm_start == production.location(
      "models/1-a")
