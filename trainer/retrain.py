r"""The scheduled retraining job in one command: prepare if needed, train, export, promote.

  python -m trainer.retrain --input=gs://bucket/aclImdb_v1.tar.gz \
      --data_cache=gs://bucket/imdb/data --runs_dir=gs://bucket/imdb/runs \
      --production=gs://bucket/imdb/production

1. The source is read and fingerprinted; it is prepared into `<data_cache>/<fingerprint>` only
   when no dataset of that fingerprint is there yet (a changed source gets a new folder).
2. A model is trained and evaluated in its own run folder `<runs_dir>/<run_name>` (default: the
   UTC date and time; pass a fixed --run_name, e.g. the Kubernetes Job's name, so that a
   restarted pod resumes the same run from its checkpoint), and exported there.
3. The export is promoted to --production only if its test accuracy beats the production
   model's by --min_improvement (see trainer.promote); the decision is logged either way.
The run folder gets `retrain.json`: the dataset used, whether it was prepared, the export and
the promotion decision. It runs on one host (one device, or MirroredStrategy over its GPUs);
for many hosts, prepare once and run trainer.train and trainer.promote as separate steps.
"""

import dataclasses
import datetime

from absl import flags
from absl import logging
import tensorflow as tf

from trainer import config_flags
from trainer import distribution
from trainer import errors
from trainer import prepare
from trainer import prepared_dataset
from trainer import promote
from trainer import storage
from trainer import train
from trainer.errors import UserInputError

FLAGS = flags.FLAGS
SUMMARY_FILE = "retrain.json"
_FINGERPRINT_CHARACTERS = 16  # Of a dataset's fingerprint, naming its folder in the cache.


def prepared_data_dir(corpus, data_cache, options=prepare.PrepareOptions()):
  """Prepares `corpus` into `<data_cache>/<fingerprint>` unless it is there already.

  Returns:
    (the dataset folder, whether it was prepared now).
  """
  fingerprint = prepare.fingerprint(prepare.content_sha256(corpus.reviews), options)
  data_dir = storage.join(data_cache, fingerprint[:_FINGERPRINT_CHARACTERS])
  if tf.io.gfile.exists(storage.join(data_dir, prepared_dataset.METADATA_FILE)):
    logging.info("The source is unchanged: using the dataset prepared in %s.", data_dir)
    return data_dir, False
  prepare.prepare(corpus, data_dir, options)
  return data_dir, True


def retrain(config, corpus, data_cache, run_dir, production, min_improvement,
            options=train.RunOptions(), strategy=None):
  """Runs the whole scheduled job once.

  Args:
    config: the `config.Config` to train.
    corpus: a `sources.Corpus`, the current source.
    data_cache: folder of prepared datasets, one per source fingerprint.
    run_dir: this run's own folder (a run there already is resumed).
    production: the production folder promotion writes to (local or gs://).
    min_improvement: test accuracy a candidate must gain over production to be promoted.
    options: `train.RunOptions` (its data_dir is set here).
    strategy: a `tf.distribute.Strategy`; built from `options.strategy` when None.

  Returns:
    The summary also written to <run_dir>/retrain.json.
  """
  strategy = strategy or distribution.build_strategy(options.strategy)
  if distribution.num_workers(strategy) > 1:
    raise UserInputError("trainer.retrain runs on one host. For many hosts, prepare the data "
                         "once, train with python -m trainer.train --data_dir=..., then run "
                         "python -m trainer.promote on the export.")
  data_dir, prepared_now = prepared_data_dir(corpus, data_cache)
  results = train.train_and_evaluate(config, run_dir, dataclasses.replace(
      options, data_dir=data_dir), strategy)
  summary = {"run_dir": run_dir, "data_dir": data_dir, "prepared": prepared_now,
             "test": results["test"], "export": results["export"],
             "decision": promote.promote(results["export"], production, min_improvement)}
  storage.write_json_atomically(storage.join(run_dir, SUMMARY_FILE), summary)
  logging.info("Retraining done: %s", summary)
  return summary


def default_run_name():
  """The UTC date and time, e.g. 20261128-221500."""
  return datetime.datetime.now(datetime.timezone.utc).strftime("%Y%m%d-%H%M%S")


def main(argv):
  """Runs the scheduled job with the flags' settings."""
  if len(argv) > 1:
    raise UserInputError(f"Unexpected arguments {argv[1:]}; every option is a --flag.")
  strategy = train.strategy_from_flags()
  if FLAGS.min_improvement < 0:
    raise UserInputError(f"--min_improvement={FLAGS.min_improvement}: use a value >= 0.")
  run_dir = storage.join(FLAGS.runs_dir, FLAGS.run_name or default_run_name())
  retrain(config_flags.config_from_flags(), prepare.read_source_from_flags(), FLAGS.data_cache,
          run_dir, FLAGS.production, FLAGS.min_improvement,
          train.run_options_from_flags(data_dir=None), strategy)


if __name__ == "__main__":
  train.define_run_flags()
  flags.DEFINE_string("data_cache", None, "Folder (local or gs://) of prepared datasets, one "
                      "per source fingerprint.")
  flags.DEFINE_string("runs_dir", None, "Folder (local or gs://) of the dated run folders.")
  flags.DEFINE_string("run_name", None, "This run's folder name (default: UTC date-time). "
                      "A fixed name resumes that run.")
  flags.DEFINE_string("production", None, "Production folder (local or gs://) to promote to.")
  flags.DEFINE_float("min_improvement", 0.0, "Test accuracy the new model must gain over "
                     "the production model to replace it.")
  for required in ("data_cache", "runs_dir", "production"):
    flags.mark_flag_as_required(required)
  errors.run(main)
