"""The scheduled retraining job: prepare if the source changed, train, export, promote.

1. The source is read and fingerprinted; it is prepared into `<data_cache>/<fingerprint>` only
   when no dataset of that fingerprint is there yet (a changed source gets a new folder).
2. A model is trained and evaluated in its own run folder, and exported there.
3. The export is promoted to production only if its test accuracy beats the production
   model's by `min_improvement` (see `serving.promote`); the decision is logged either way.
The run folder gets `retrain.json`: the dataset used, whether it was prepared, the export and
the promotion decision. It runs on one host (one device, or MirroredStrategy over its GPUs);
for many hosts, prepare once and run trainer.train and trainer.promote as separate steps.
"""

import datetime

from absl import logging

from trainer.cluster import strategy as strategy_lib
from trainer import config as config_lib
from trainer.data import prepare
from trainer.errors import UserInputError
from trainer.serving import promote
from trainer import storage
from trainer.training import train_lib

SUMMARY_FILE = "retrain.json"


def retrain(config, corpus, data_cache, run_dir, production, min_improvement, strategy=None):
  """Runs the whole scheduled job once.

  Args:
    config: the `config.Config` to train; its data section says how to prepare.
    corpus: a `sources.Corpus`, the current source.
    data_cache: folder of prepared datasets, one per source fingerprint.
    run_dir: this run's own folder (a run there already is resumed).
    production: the production folder promotion writes to (local or gs://).
    min_improvement: test accuracy a candidate must gain over production to be promoted.
    strategy: a `tf.distribute.Strategy`; built from `config.run.strategy` when None.

  Returns:
    The summary also written to <run_dir>/retrain.json.
  """
  strategy = strategy or strategy_lib.build_strategy(config.run.strategy)
  if strategy_lib.num_workers(strategy) > 1:
    raise UserInputError("trainer.retrain runs on one host. For many hosts, prepare the data "
                         "once, train with python -m trainer.train --data_dir=..., then run "
                         "python -m trainer.promote on the export.")
  data_dir, prepared_now = prepare.prepare_into_cache(corpus, data_cache, config.data)
  results = train_lib.train_and_evaluate(config_lib.override(config, data_dir=data_dir),
                                         run_dir, strategy)
  summary = {"run_dir": run_dir, "data_dir": data_dir, "prepared": prepared_now,
             "test": results["test"], "export": results["export"],
             "decision": promote.promote(results["export"], production, min_improvement)}
  storage.write_json_atomically(storage.join(run_dir, SUMMARY_FILE), summary)
  logging.info("Retraining done: %s", summary)
  return summary


def default_run_name():
  """The UTC date and time, e.g. 20261128-221500."""
  return datetime.datetime.now(datetime.timezone.utc).strftime("%Y%m%d-%H%M%S")
