"""The scheduled retraining job: prepare if the source changed, gate the data, train, promote.

1. The source is read and fingerprinted; the chief prepares it into `<data_cache>/<fingerprint>`
   unless that dataset is there already (a changed source gets a new folder), while the other
   workers wait for it (at most `data_wait_seconds`).
2. The data gate (`retraining.data_gate`) compares the dataset with the one the production model
   was trained on; beyond its thresholds every worker stops with `errors.DataDrift` (exit 4),
   unless `allow_data_drift`.
3. All workers train and evaluate a model in the run folder; the chief exports it.
4. The chief promotes the export only if it serves and beats production on the same held-out
   reviews, the test split of the source (`serving.promote`), and logs the decision either way;
   a significant regression raises `errors.Regression` (exit 3), a candidate that does not
   serve `errors.ServingGateFailed` (exit 5).
The chief writes `retrain.json` in the run folder: the dataset, the data gate, the test metrics,
the export and the decision.
"""

import dataclasses
import datetime
import time

from absl import logging
import tensorflow as tf

from trainer.cluster import strategy as strategy_lib
from trainer import config as config_lib
from trainer.config import option
from trainer.config import Options
from trainer.data import prepare
from trainer.data import prepared_dataset
from trainer.data import statistics
from trainer import errors
from trainer.retraining import data_gate
from trainer.serving import evaluation
from trainer.serving import promote
from trainer import storage
from trainer.training import train_lib

SUMMARY_FILE = "retrain.json"
_POLL_SECONDS = 5


@dataclasses.dataclass(frozen=True)
class Gates(Options):
  """The data gate's settings (flags of retrain beside the promotion policy)."""
  allow_data_drift: bool = option(False, "Train even when the new data moved beyond the data "
                                  "gate's thresholds (docs/operations.md).")
  data_wait_seconds: float = option(3600.0, "How long the other workers wait for the chief to "
                                    "prepare the data.", bound="positive")


def retrain(config, corpus, data_cache, run_dir, production, policy=promote.Policy(),
            gates=Gates(), strategy=None):
  """Runs the whole scheduled job once, on this worker.

  Args:
    config: the `config.Config` to train; its data section says how to prepare.
    corpus: a `sources.Corpus`, the current source.
    data_cache: folder of prepared datasets, one per source fingerprint.
    run_dir: this run's own folder (a run there already is resumed).
    production: the production folder promotion writes to (local or gs://).
    policy: the `promote.Policy` a candidate must pass.
    gates: the data gate's `Gates`.
    strategy: a `tf.distribute.Strategy`; built from `config.run.strategy` when None.

  Returns:
    The summary (on the chief, also written to <run_dir>/retrain.json).
  """
  strategy = strategy or strategy_lib.build_strategy(config.run.strategy)
  chief = strategy_lib.is_chief(strategy)
  if chief:
    data_dir, prepared_now = prepare.prepare_into_cache(corpus, data_cache, config.data)
  else:
    data_dir, prepared_now = _wait_for_dataset(corpus, data_cache, config.data,
                                               gates.data_wait_seconds), False
  summary = {"run_dir": run_dir, "data_dir": data_dir, "prepared": prepared_now,
             "data_gate": _data_gate(data_dir, production)}
  if summary["data_gate"]["problems"] and not gates.allow_data_drift:
    _write_summary(chief, run_dir, summary)
    raise errors.DataDrift(
        f"The new data differs from production's: {'; '.join(summary['data_gate']['problems'])}."
        " Check the source; to train on it anyway, rerun with --allow_data_drift.")
  results = train_lib.train_and_evaluate(config_lib.override(config, data_dir=data_dir),
                                         run_dir, strategy)
  summary.update(test=results["test"], export=results.get("export"))
  if chief:
    assessor = promote.Assessor(evaluation.test_split(corpus))
    summary["decision"] = promote.promote(results["export"], production, assessor, policy)
    _write_summary(chief, run_dir, summary)
    promote.raise_alerts(summary["decision"])
  for line in summary_lines(summary):
    logging.info("%s", line)
  return summary


def summary_lines(summary):
  """The retraining's outcome in a few sentences (the record itself is retrain.json)."""
  gate = summary["data_gate"]
  lines = [f"Data: {summary['data_dir']} ({'prepared now' if summary['prepared'] else 'cached'});"
           f" data gate: {'; '.join(gate['problems']) or 'passed'}"
           f"{'' if gate['baseline'] else ' (no production baseline yet)'}."]
  if "test" in summary:
    lines.append(f"Trained in {summary['run_dir']}: test accuracy "
                 f"{summary['test']['accuracy']:.4f}.")
  decision = summary.get("decision")
  if decision:
    lines.append(f"Decision: {decision['verdict']}: {decision['reason']}.")
    lines.append(f"Decision record: {decision['log']}; run record: "
                 f"{storage.join(summary['run_dir'], SUMMARY_FILE)}.")
  elif "test" in summary:
    lines.append("This worker is done; the chief exports and decides.")
  return lines


def _wait_for_dataset(corpus, data_cache, options, wait_seconds):
  """The dataset folder the chief prepares `corpus` into, once its metadata is there."""
  data_dir = prepare.cache_folder(corpus, data_cache, options)
  metadata = storage.join(data_dir, prepared_dataset.METADATA_FILE)
  deadline = time.monotonic() + wait_seconds
  while not tf.io.gfile.exists(metadata):
    if time.monotonic() > deadline:
      raise errors.DataNotReady(
          f"The chief did not prepare {data_dir} within {wait_seconds:g} s; exiting with code "
          f"{errors.RETRY_EXIT_CODE} so that the job is retried. If preparing takes "
          "longer, raise --data_wait_seconds.")
    time.sleep(_POLL_SECONDS)
  logging.info("The chief prepared %s.", data_dir)
  return data_dir


def _data_gate(data_dir, production):
  """The data gate's comparison of the dataset with the production model's training data."""
  baseline = promote.production_metadata(production)
  return data_gate.check(statistics.split_summaries(prepared_dataset.load_metadata(data_dir)),
                         (baseline or {}).get("data_statistics"))


def _write_summary(chief, run_dir, summary):
  """Writes the summary into the run folder (on the chief only)."""
  if chief:
    tf.io.gfile.makedirs(run_dir)
    storage.write_json_atomically(storage.join(run_dir, SUMMARY_FILE), summary)


def default_run_name():
  """The UTC date and time, e.g. 20261128-221500."""
  return datetime.datetime.now(datetime.timezone.utc).strftime("%Y%m%d-%H%M%S")
