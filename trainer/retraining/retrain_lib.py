"""The scheduled retraining job: prepare if the source changed, gate the data, train, promote.

1. The source is read and fingerprinted; the chief prepares it into `<data_cache>/<fingerprint>`
   unless that dataset is there already (a changed source gets a new folder), while the other
   workers wait for it (at most `data_wait_seconds`).
2. The data gate (`retraining.data_gate`) compares the dataset, and production's view of a sample
   of its reviews, with what the production model learned from; the chief decides and writes
   `data_gate.json` into the run folder, which the other workers wait for. Beyond its thresholds
   every worker stops with `errors.DataDrift` (exit 4), unless `allow_data_drift`.
3. All workers train and evaluate a model in the run folder (`--warm_start=production`: from the
   production model's weights); the chief exports it.
4. The chief promotes the export only if it serves and beats production on the same held-out
   reviews, the test split of the source (`serving.promote`), and logs the decision either way;
   a significant regression raises `errors.Regression` (exit 3), a candidate that does not
   serve `errors.ServingGateFailed` (exit 5).
The chief writes `retrain.json` in the run folder: the dataset, the data gate, the warm start, the
test metrics, the export and the decision.
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
from trainer.serving import significance
from trainer import storage
from trainer.training import train_lib
from trainer.training import warm_start
from trainer.training import workdir as workdir_lib

SUMMARY_FILE = "retrain.json"
GATE_FILE = "data_gate.json"
_POLL_SECONDS = 5


@dataclasses.dataclass(frozen=True)
class Gates(Options):
  """The data gate's settings (flags of retrain beside the promotion policy)."""
  allow_data_drift: bool = option(False, "Train even when the new data moved beyond the data "
                                  "gate's thresholds (docs/operations.md).")
  data_wait_seconds: float = option(3600.0, "How long the other workers wait for the chief to "
                                    "prepare the data, and again to check it.", bound="positive")
  drift_reviews: int = option(2500, "Reviews of each split of the new data (whole movies, picked "
                              "by a fixed hash) that production scores for the drift checks.",
                              bound="positive")


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
  current = promote.current_model(production)
  config = _resolve_warm_start(config, current, run_dir)
  if chief:
    data_dir, prepared_now = prepare.prepare_into_cache(corpus, data_cache, config.data)
    gate = _data_gate(corpus, data_dir, current, gates.drift_reviews)
    _write(chief, run_dir, GATE_FILE, gate)
  else:
    data_dir, prepared_now = _wait_for_dataset(corpus, data_cache, config.data,
                                               gates.data_wait_seconds), False
    gate = _wait_for_gate(run_dir, data_dir, current, gates.data_wait_seconds)
  summary = {"run_dir": run_dir, "data_dir": data_dir, "prepared": prepared_now,
             "data_gate": gate, "warm_start": config.training.warm_start or None}
  if summary["data_gate"]["problems"] and not gates.allow_data_drift:
    _write(chief, run_dir, SUMMARY_FILE, summary)
    raise errors.DataDrift(
        f"The new data differs from production's: {'; '.join(summary['data_gate']['problems'])}."
        " Check the source; to train on it anyway, rerun with --allow_data_drift.")
  results = train_lib.train_and_evaluate(config_lib.override(config, data_dir=data_dir),
                                         run_dir, strategy)
  summary.update(test=results["test"], export=results.get("export"))
  if chief:
    assessor = promote.Assessor(evaluation.test_split(corpus))
    summary["decision"] = promote.promote(results["export"], production, assessor, policy)
    _write(chief, run_dir, SUMMARY_FILE, summary)
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
  drift = [check for check in gate.get("checks", []) if "noise" in check]
  if drift:
    closest = max(drift, key=lambda check: check["value"] / max(check["threshold"], 1e-12))
    lines.append(f"Drift: {len(drift)} statistics of production's view of the new reviews vs its "
                 f"validation reviews, thresholds from their noise; closest to its threshold: "
                 f"{closest['split']} {closest['statistic']} {closest['value']:.4f} of "
                 f"{closest['threshold']:.4f}.")
  lines += [f"Not compared: {note}." for note in gate.get("notes", [])]
  if "test" in summary:
    start = f"from {summary['warm_start']}" if summary.get("warm_start") else "from scratch"
    lines.append(f"Trained in {summary['run_dir']} ({start}): test accuracy "
                 f"{summary['test']['accuracy']:.4f}.")
  decision = summary.get("decision")
  if decision:
    lines.append(f"Decision: {decision['verdict']}: {decision['reason']}.")
    if decision.get("bootstrap"):
      lines.append(_evidence_sentence(decision))
    lines.append(f"Decision record: {decision['log']}; run record: "
                 f"{storage.join(summary['run_dir'], SUMMARY_FILE)}.")
  elif "test" in summary:
    lines.append("This worker is done; the chief exports and decides.")
  return lines


def _evidence_sentence(decision):
  """The power and the bootstrap of a decision record, in a sentence."""
  bootstrap = decision["bootstrap"]
  enough = (f" (too few reviews for min_improvement {decision['min_improvement']:.2%})"
            if decision["underpowered"] else "")
  low, high = bootstrap["interval"]
  return (f"Evidence: on {decision['examples']} reviews, {significance.describe_power(decision)}"
          f"{enough}; bootstrap over {bootstrap['clusters']} movies: difference {low:+.2%} to "
          f"{high:+.2%}, p = {bootstrap['p_value_better']:.3g} better, "
          f"{bootstrap['p_value_worse']:.3g} worse.")


def _resolve_warm_start(config, current, run_dir):
  """`config` with --warm_start=production replaced by the production model's folder (nothing
  before the first promotion); a run resumed keeps the one it started from, even when it has
  been promoted since."""
  if config.training.warm_start != warm_start.PRODUCTION:
    return config
  record = workdir_lib.run_record_of(workdir_lib.output_locations(run_dir))
  if record:
    resolved = record["config"]["training"].get("warm_start", "")
  elif current is None:
    logging.info("--warm_start=production: no production model yet; training from scratch.")
    resolved = ""
  else:
    resolved = current[1].location()
  return config_lib.override(config, warm_start=resolved)


def _wait_until(ready, what, wait_seconds):
  """Polls `ready()` until true; after `wait_seconds`, `errors.DataNotReady` naming `what`."""
  deadline = time.monotonic() + wait_seconds
  while not ready():
    if time.monotonic() > deadline:
      raise errors.DataNotReady(
          f"The chief did not {what} within {wait_seconds:g} s; exiting with code "
          f"{errors.RETRY_EXIT_CODE} so that the job is retried. If it takes longer, raise "
          "--data_wait_seconds.")
    time.sleep(_POLL_SECONDS)


def _wait_for_dataset(corpus, data_cache, options, wait_seconds):
  """The dataset folder the chief prepares `corpus` into, once its metadata is there."""
  data_dir = prepare.cache_folder(corpus, data_cache, options)
  metadata = storage.join(data_dir, prepared_dataset.METADATA_FILE)
  _wait_until(lambda: tf.io.gfile.exists(metadata), f"prepare {data_dir}", wait_seconds)
  logging.info("The chief prepared %s.", data_dir)
  return data_dir


def _wait_for_gate(run_dir, data_dir, current, wait_seconds):
  """The chief's data gate of `data_dir` against the production model `current`, once written.

  A gate file of an earlier attempt of this run counts only if it judged the same data against
  the same production model (the gate is deterministic: it would be the same).
  """
  path = storage.join(run_dir, GATE_FILE)
  model_id = current[0] if current else None

  def written():
    """Whether the chief's gate of this data and model is there."""
    if not tf.io.gfile.exists(path):
      return False
    gate = storage.read_json(path)
    return (gate.get("data_dir"), gate.get("production_model_id")) == (data_dir, model_id)

  _wait_until(written, f"check the data in {path}", wait_seconds)
  return storage.read_json(path)


def _data_gate(corpus, data_dir, current, drift_reviews):
  """The data gate of the dataset (and of `corpus`, its source) against the production model."""
  new = statistics.split_summaries(prepared_dataset.load_metadata(data_dir))
  model_id, model, metadata = current or (None, None, None)
  view = None
  if metadata and metadata.get("drift_baseline"):
    with model.local_copy() as model_dir:
      view = data_gate.production_view(corpus, model_dir, drift_reviews)
  return {**data_gate.check(new, metadata, view), "data_dir": data_dir,
          "production_model_id": model_id}


def _write(chief, run_dir, name, record):
  """Writes `record` as the file `name` of the run folder (on the chief only)."""
  if chief:
    tf.io.gfile.makedirs(run_dir)
    storage.write_json_atomically(storage.join(run_dir, name), record)


def default_run_name():
  """The UTC date and time, e.g. 20261128-221500."""
  return datetime.datetime.now(datetime.timezone.utc).strftime("%Y%m%d-%H%M%S")
