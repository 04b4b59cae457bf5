r"""What the serving gate measures for a preset's export on this machine: latency and throughput.

  python benchmarks/serving_latency.py [--preset=default] [--data_dir=/tmp/imdb_prepared] \
      [--repeats=3] [any config flag]

Exports a model of the preset's architecture (seeded random weights: serving time depends on the
shapes, not on the values) with the vocabulary of --data_dir (or placeholder words of the
preset's vocabulary size), then runs the serving gate (`trainer.serving.serving_gate`: a fresh
process, the warm-up requests, 200 single typical 54-word reviews, 20 batches of 64) --repeats
times. Prints each run; the last line is JSON, also written to
benchmarks/results/serving-latency-<preset>.json.
"""

import json
import os
import tempfile

from absl import app
from absl import flags
import keras

import common
from trainer import cli
from trainer.data import text
from trainer.modeling import model as model_lib
from trainer.serving import export
from trainer.serving import serving_gate

FLAGS = flags.FLAGS
cli.define_config_flags()  # --data_dir: a prepared dataset whose vocabulary the export uses.
flags.DEFINE_integer("repeats", 3, "Serving-gate runs, each in a fresh process.")


def vocabulary(config):
  """The vocabulary of --data_dir, or placeholder words of the preset's vocabulary size."""
  if FLAGS.data_dir:
    return text.load_vocabulary(os.path.join(FLAGS.data_dir, "vocab.txt"))
  return ["<pad>", "<unk>"] + [f"word{i}" for i in range(config.data.vocab_size - 2)]


def main(argv):
  """Exports, runs the gate, prints and writes the result."""
  del argv
  config = cli.config_from_flags()
  keras.utils.set_random_seed(0)
  weights = model_lib.build_model(config).get_weights()
  with tempfile.TemporaryDirectory(prefix="serving_latency_") as workdir:
    path = export.export(export.build_classifier(config, weights, vocabulary(config)), workdir,
                         {"benchmark": "serving_latency"})
    runs = []
    for repeat in range(FLAGS.repeats):
      report = serving_gate.measure(path)
      if not report["loaded"]:
        raise SystemExit(f"The export did not serve: {report['error']}")
      print(f"run {repeat + 1}: p50 {report['latency_ms_p50']} ms, p99 "
            f"{report['latency_ms_p99']} ms, batch {report['batch_size']}: "
            f"{report['reviews_per_s']} reviews/s", flush=True)
      runs.append(report)
  summary = {**common.run_facts(), "preset": FLAGS.preset,
             "vocabulary": FLAGS.data_dir or "placeholder", "runs": runs,
             "latency_ms_p50": min(r["latency_ms_p50"] for r in runs),
             "latency_ms_p99": min(r["latency_ms_p99"] for r in runs),
             "reviews_per_s": max(r["reviews_per_s"] for r in runs),
             "best_of": FLAGS.repeats}
  common.write_result(f"serving-latency-{FLAGS.preset}.json", summary)
  print(json.dumps(summary))


if __name__ == "__main__":
  app.run(main)
