r"""Accuracy benchmark: trains a preset on the real IMDB data and reports test accuracy and time.

  python benchmarks/accuracy.py --preset=default [--export=final|best] [--seed=1]

Prepares the tarball (or uses --data_dir), trains the preset with `trainer.train` on this machine,
and evaluates on the official 25,000 test reviews. `wall_seconds` is the training run's wall time,
validation and test evaluation included, preparation excluded. The last line is one JSON object,
also written to benchmarks/results/accuracy-<preset>-<export>-seed<seed>.json (the numbers the
docs publish come from those files).
"""

import datetime
import json
import os
import tempfile

from absl import app
from absl import flags

import common
from trainer import config as config_lib
from trainer.training import train_lib

FLAGS = flags.FLAGS
flags.DEFINE_string("preset", "default", "Preset to train.")
common.define_data_flags()
flags.DEFINE_string("workdir", None, "Where the run writes (a new temporary folder if unset).")
flags.DEFINE_integer("seed", None, "Overrides the preset's seed (weights, dropout, data order).")
flags.DEFINE_enum("export", None, ("final", "best"), "Overrides the preset's --export: which "
                  "weights are tested.")


def main(argv):
  """Trains and prints the numbers."""
  del argv
  workdir = FLAGS.workdir or tempfile.mkdtemp(prefix=f"accuracy_{FLAGS.preset}_")
  data_dir = common.prepared_data_dir(workdir)
  config = config_lib.override(config_lib.get_preset(FLAGS.preset), data_dir=data_dir)
  if FLAGS.seed is not None:
    config = config_lib.override(config, seed=FLAGS.seed)
  if FLAGS.export:
    config = config_lib.override(config, export=FLAGS.export)
  results = train_lib.train_and_evaluate(config, os.path.join(workdir, "run"))
  summary = {"preset": FLAGS.preset, "seed": config.training.seed,
             "export": config.run.export, "tested_step": results["tested_step"],
             "date": datetime.date.today().isoformat(),
             "test_accuracy": round(results["test"]["accuracy"], 4),
             "test_auc": round(results["test"]["auc"], 4),
             "validation_accuracy": round(results["validation"]["accuracy"], 4),
             "wall_seconds": results["wall_seconds"], "steps": results["step"],
             "train_examples_per_s": results["examples_per_s"], "data_dir": data_dir}
  print(json.dumps(summary))
  name = f"accuracy-{FLAGS.preset}-{config.run.export}-seed{config.training.seed}.json"
  common.write_result(name, summary)


if __name__ == "__main__":
  app.run(main)
