r"""Warm start: steps to reach production's validation accuracy, from scratch vs from production.

  python benchmarks/warm_start.py [--preset=default] [--production_epochs=1] [--epochs=2] \
      [--eval_every_steps=50] [--seed=1] [--min_improvement=0.005] [any config flag]

On the real IMDB data (--data, prepared, or --data_dir): trains a "production" model of the preset for
--production_epochs (seed 0) and exports it; then trains the preset twice more on the same data
with --seed, from random weights (cold) and from that export (`--warm_start`, warm), validating
every --eval_every_steps steps. For each run: the first step whose validation accuracy reaches
production's, its best validation accuracy, its test accuracy and its wall time. Then promotion
decides, on the 25,000 test reviews, production into an empty production folder, cold against
it, and warm against the winner (`--min_improvement`; the latency budget is lifted: the
machine is shared): each decision's counts, p-values, detectable difference and movie bootstrap.
The last line printed is the JSON also written to benchmarks/results/warm-start-<preset>.json.
"""

import json
import os
import tempfile

from absl import app
from absl import flags

import common
from trainer import cli
from trainer import config as config_lib
from trainer.data import sources
from trainer.serving import evaluation
from trainer.serving import promote
from trainer.training import train_lib

FLAGS = flags.FLAGS
cli.define_config_flags()
common.define_tarball_flag()
flags.DEFINE_float("production_epochs", 1.0, "Epochs of the production model.")
flags.DEFINE_string("workdir", None, "Where the runs write (a new temporary folder if unset).")
flags.DEFINE_float("min_improvement", 0.005, "The promotion policy's min_improvement.")
# What the result keeps of a decision record.
DECISION_FACTS = ("verdict", "reason", "candidate_accuracy", "production_accuracy",
                  "candidate_only_correct", "production_only_correct", "p_value_better",
                  "p_value_worse", "alpha", "power", "detectable_difference", "underpowered",
                  "bootstrap")


def run_summary(results, target):
  """What the comparison keeps of one run: when it first reached `target` (validation accuracy)."""
  validated = [(record["step"], record["validation"]["accuracy"]) for record in results["history"]
               if "validation" in record]
  return {"steps_to_production_accuracy": next(
              (step for step, accuracy in validated if accuracy >= target), None),
          "first_validation": {"step": validated[0][0], "accuracy": round(validated[0][1], 4)},
          "best_validation_accuracy": round(max(accuracy for _, accuracy in validated), 4),
          "test_accuracy": round(results["test"]["accuracy"], 4), "steps": results["step"],
          "wall_seconds": results["wall_seconds"]}


def decisions(exports, tarball, workdir):
  """What promotion decides of the exports, in order, into an empty production folder."""
  assessor = promote.Assessor(evaluation.test_split(sources.read_tarball(tarball)))
  policy = promote.Policy(min_improvement=FLAGS.min_improvement, max_latency_ms=1e6)
  records = {}
  for name, path in exports.items():
    record = promote.promote(path, os.path.join(workdir, "promotion"), assessor, policy)
    records[name] = {key: record[key] for key in DECISION_FACTS}
    print(name, record["verdict"], record["reason"], flush=True)
  return records


def main(argv):
  """Trains production, then cold and warm; promotes; prints and writes the comparison."""
  del argv
  workdir = FLAGS.workdir or tempfile.mkdtemp(prefix="warm_start_")
  config = config_lib.override(cli.config_from_flags(),
                               data_dir=common.prepared_data_dir(workdir))
  production = train_lib.train_and_evaluate(
      config_lib.override(config, epochs=FLAGS.production_epochs, seed=0, warm_start=""),
      os.path.join(workdir, "production"))
  target = production["validation"]["accuracy"]
  print(f"Production: validation accuracy {target:.4f}, export {production['export']}.",
        flush=True)
  runs, exports = {}, {"production": production["export"]}
  for name, warm_start in (("cold", ""), ("warm", production["export"])):
    results = train_lib.train_and_evaluate(config_lib.override(config, warm_start=warm_start),
                                           os.path.join(workdir, name))
    runs[name] = run_summary(results, target)
    exports[name] = results["export"]
    print(name, json.dumps(runs[name]), flush=True)
  summary = {"preset": FLAGS.preset, "flags": cli.given_flags(),
             "production_epochs": FLAGS.production_epochs, "production_steps": production["step"],
             "production_validation_accuracy": round(target, 4),
             "production_test_accuracy": round(production["test"]["accuracy"], 4),
             "eval_every_steps": config.run.eval_every_steps, "seed": config.training.seed,
             "epochs": config.training.epochs, **runs,
             "decisions": decisions(exports, common.tarball_or_generated(FLAGS.data, workdir),
                                    workdir),
             **common.run_facts()}
  common.write_result(f"warm-start-{FLAGS.preset}.json", summary)
  print(json.dumps(summary))


if __name__ == "__main__":
  app.run(main)
