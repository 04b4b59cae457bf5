r"""Accuracy benchmark: trains a preset on the real IMDB data over seeds; test accuracy and time.

  python benchmarks/accuracy.py --preset=default --seeds=0,1,2 [--export=final] [any config flag]

Prepares the tarball (or uses --data_dir), trains the preset (with any config flag of
`trainer.train` on top) once per seed on this machine, and evaluates on the official 25,000 test
reviews. `wall_seconds` is a training run's wall time, validation and test evaluation included,
preparation excluded. Each seed's result is written as it finishes to
benchmarks/results/accuracy-<name>-<export>-seed<seed>.json, and the summary over the seeds
(mean, standard deviation, min, max) to accuracy-<name>-<export>-summary.json; <name> is
--result_name, by default the preset. The last line printed is the summary (the numbers the docs
publish come from those files).
"""

import datetime
import json
import os
import statistics
import tempfile

from absl import app
from absl import flags

import common
from trainer import cli
from trainer import config as config_lib
from trainer.training import train_lib

FLAGS = flags.FLAGS
cli.define_config_flags()
common.define_tarball_flag()
flags.DEFINE_list("seeds", None, "Seeds to train, e.g. 0,1,2 (default: the config's --seed).")
flags.DEFINE_string("workdir", None, "Where the runs write (a new temporary folder if unset).")
flags.DEFINE_string("result_name", None, "Names the result files (default: the preset); give "
                    "one when config flags change the preset, e.g. multi-host-96.")


def train_seed(config, workdir):
  """Trains and tests one seed; returns its result."""
  results = train_lib.train_and_evaluate(config, workdir)
  return {"preset": FLAGS.preset, "seed": config.training.seed, "export": config.run.export,
          "tested_step": results["tested_step"], "date": datetime.date.today().isoformat(),
          "test_accuracy": round(results["test"]["accuracy"], 4),
          "test_auc": round(results["test"]["auc"], 4),
          "validation_accuracy": round(results["validation"]["accuracy"], 4),
          "wall_seconds": results["wall_seconds"], "steps": results["step"],
          "train_examples_per_s": results["examples_per_s"], "data_dir": config.run.data_dir,
          "flags": cli.given_flags(), "load_average_at_end": [
              round(x, 2) for x in os.getloadavg()]}


def summarize(runs):
  """Mean, standard deviation (n - 1), min and max of the seeds' test accuracy, and their runs."""
  accuracies = [run["test_accuracy"] for run in runs]
  return {"preset": FLAGS.preset, "export": runs[0]["export"], "flags": runs[0]["flags"],
          "seeds": [run["seed"] for run in runs], "runs": len(runs),
          "test_accuracy_mean": round(statistics.mean(accuracies), 4),
          "test_accuracy_std": round(statistics.stdev(accuracies), 4) if len(runs) > 1 else None,
          "test_accuracy_min": min(accuracies), "test_accuracy_max": max(accuracies),
          "wall_seconds_mean": round(statistics.mean(run["wall_seconds"] for run in runs), 1),
          "train_examples_per_s_mean": round(statistics.mean(
              run["train_examples_per_s"] for run in runs), 1),
          **common.run_facts()}


def main(argv):
  """Trains every seed, then prints and writes the summary."""
  del argv
  workdir = FLAGS.workdir or tempfile.mkdtemp(prefix=f"accuracy_{FLAGS.preset}_")
  config = config_lib.override(cli.config_from_flags(),
                               data_dir=common.prepared_data_dir(workdir))
  seeds = [int(seed) for seed in FLAGS.seeds] if FLAGS.seeds else [config.training.seed]
  name = f"accuracy-{FLAGS.result_name or FLAGS.preset}-{config.run.export}"
  runs = []
  for seed in seeds:
    run = train_seed(config_lib.override(config, seed=seed),
                     os.path.join(workdir, f"run-seed{seed}"))
    print(json.dumps(run), flush=True)
    common.write_result(f"{name}-seed{seed}.json", run)
    runs.append(run)
  summary = summarize(runs)
  if len(runs) > 1:
    common.write_result(f"{name}-summary.json", summary)
  print(json.dumps(summary))


if __name__ == "__main__":
  app.run(main)
