"""`train_and_evaluate(config, workdir)`: trains, evaluates and exports; it reads no flags.

  from trainer import config
  from trainer.training import train_lib
  train_lib.train_and_evaluate(
      config.override(config.get_preset("local"), data_dir="/tmp/imdb_prepared"), "/tmp/run")

One custom loop serves every strategy (one device, MirroredStrategy, MultiWorkerMirroredStrategy);
Keras `fit` is not used because it fails under MultiWorkerMirroredStrategy on this stack. A run
started again on the same workdir resumes at the exact step of its last readable checkpoint: the
data position is recomputed from the step. SIGTERM saves the current step and raises
`errors.Preempted` (see `cluster.preemption`). Only the chief writes to the workdir:
checkpoints/, tensorboard/, config.json, metrics.json and export/ (see `serving.export`).
"""

import contextlib
import dataclasses
import sys
import time

from absl import logging
import keras
import tensorflow as tf

from trainer.cluster import preemption
from trainer.cluster import strategy as strategy_lib
from trainer import config as config_lib
from trainer.data import prepared_dataset
from trainer.data import statistics
from trainer.data import text
from trainer import errors
from trainer.modeling import model as model_lib
from trainer.serving import export
from trainer.serving import review_signals
from trainer import storage
from trainer.training import best as best_lib
from trainer.training import checkpoints as checkpoints_lib
from trainer.training import datasets
from trainer.training import optimization
from trainer.training import steps
from trainer.training import summaries as summaries_lib
from trainer.training import train_log
from trainer.training import tuning
from trainer.training import warm_start
from trainer.training import workdir as workdir_lib

# What a multi-worker step raises when a peer dies (connection reset) or stops answering (the
# coordination service's missed heartbeats, about 10 s).
_PEER_FAILURES = (tf.errors.UnavailableError, tf.errors.DeadlineExceededError,
                  tf.errors.AbortedError)


def train_and_evaluate(config, workdir, strategy=None):
  """Trains, evaluates on validation each epoch and on test at the end, and writes results.

  Args:
    config: a `config.Config`; `config.run.data_dir` names the prepared dataset.
    workdir: output folder (local or gs://); an existing run there is resumed.
    strategy: a `tf.distribute.Strategy`; built from `config.run.strategy` when None.

  Returns:
    The results also written to <workdir>/metrics.json.

  Raises:
    errors.Preempted: after SIGTERM, once the checkpoint of the current step is saved.
    errors.PeerLost: when another worker of a multi-worker job is lost.
  """
  strategy = strategy or strategy_lib.build_strategy(config.run.strategy)
  locations = workdir_lib.output_locations(workdir)
  chief = strategy_lib.is_chief(strategy)
  with (_debug_mode(config.run.debug), preemption.sigterm_flag() as sigterm,
        checkpoints_lib.worker_checkpoint_dir(chief, locations.checkpoints) as checkpoint_dir):
    try:
      return _train_and_evaluate(config, locations, strategy, checkpoint_dir, sigterm)
    except _PEER_FAILURES as e:  # Collectives aborted: a peer died or missed its heartbeats.
      if strategy_lib.num_workers(strategy) == 1:
        raise
      raise errors.PeerLost(e) from e


def training_is_done(workdir, max_steps=0):
  """Whether the run in `workdir` has the checkpoint of its last step (`--max_steps` or the end).

  It reads only file names and the run record (config.json), no TensorFlow op: call it before
  the strategy, to know whether this process still needs the cluster.
  """
  locations = workdir_lib.output_locations(workdir)
  record = workdir_lib.run_record_of(locations)
  steps = checkpoints_lib.checkpoint_steps(locations.checkpoints)
  if not record or not steps:
    return False
  end_step = min(record["total_steps"], max_steps or record["total_steps"])
  return steps[0] >= end_step


@dataclasses.dataclass
class _Run:
  """What a run's loop works with, built once by `_build_run`."""
  config: config_lib.Config  # Fitted to the data.
  data: datasets.RunData
  strategy: tf.distribute.Strategy
  chief: bool
  precision: str
  model: keras.Model
  optimizer: keras.optimizers.Optimizer
  checkpoints: checkpoints_lib.RunCheckpoints
  run_checkpoints_dir: str  # The run's checkpoints, which every worker restores from.
  best: best_lib.BestWeights | None  # With --export=best.
  start_step: int
  history: list  # The log records of the run so far, resumed ones included.
  nan_recoveries: int = 0


def _train_and_evaluate(config, locations, strategy, checkpoint_dir, sigterm):
  """`train_and_evaluate` inside its contexts; `sigterm` is set when SIGTERM arrives."""
  wall_start = time.perf_counter()
  run = _build_run(config, locations, strategy, checkpoint_dir)
  train_data, evaluations = datasets.build_datasets(
      strategy, run.data, run.start_step + int(run.checkpoints.data_offset))
  train_step = steps.build_train_step(strategy, run.model, run.optimizer, run.config.training,
                                      train_data.element_spec)
  evaluate = _build_evaluate(run, evaluations)
  on_preemption = preemption.CheckpointOnPreemption(
      strategy, run.checkpoints.manager, sigterm,
      multi_worker=strategy_lib.num_workers(strategy) > 1)
  with (summaries_lib.Summaries(locations.tensorboard, run.chief) as summaries,
        summaries_lib.Profiler(locations.tensorboard, run.config.run.profile_steps,
                               run.chief) as profiler):
    summaries.hparams(run.config, config_lib.METRIC_NAMES)
    train_seconds = _train(run, train_step, iter(train_data), evaluate,
                           on_preemption=on_preemption, summaries=summaries, profiler=profiler)
    on_preemption.stop()
    results = _results(run, train_seconds)
    if evaluations:
      with _tested_weights(run) as tested_step:
        results["tested_step"] = tested_step
        results["validation"] = _validation_at(run, tested_step) or evaluate("validation")
        results["test"] = evaluate("test")
        serving_weights = run.model.get_weights()  # On every worker: mirrored weights.
      train_log.log_evaluation(summaries, "test", results["test"], results["step"])
  results["final_weights_sha256"] = workdir_lib.weights_sha256(run.model)
  logging.info("Final weights sha256 (identical on every worker): %s",
               results["final_weights_sha256"])
  if evaluations and run.chief:
    _export_and_report(run, results, serving_weights, locations)
  results["wall_seconds"] = round(time.perf_counter() - wall_start, 1)
  if run.chief:
    with _writing(locations.workdir, "Writing the results"):
      storage.write_json_atomically(locations.file(workdir_lib.METRICS_FILE), results)
  return results


def _writing(folder, what):
  """The context of a write of the chief into `folder`: a storage error is reported in one line
  (retryable when it may pass), never taken for a lost worker."""
  return storage.reported_failures(folder, f"{what} in {folder}", "Check that this job can "
                                   "write there; started again, the run resumes where it was.")


def _build_run(config, locations, strategy, checkpoint_dir):
  """Checks the settings, reads the data, builds the model and restores the newest checkpoint."""
  chief = strategy_lib.is_chief(strategy)
  config_lib.per_replica_batch_size(config.training.global_batch_size,
                                    strategy.num_replicas_in_sync)  # Fails early when uneven.
  if config.run.deterministic:
    tf.config.experimental.enable_op_determinism()
  keras.utils.set_random_seed(config.training.seed)
  if chief:
    storage.check_writable(locations.workdir, "--workdir")
  data = datasets.resolve_data(config)
  config = data.config
  precision = optimization.resolve_precision(config.run.precision)
  model, optimizer = optimization.build_model_and_optimizer(strategy, config, data.total_steps,
                                                            precision)
  best = None
  if config.run.export == "best" and not config.run.synthetic_data:
    with strategy.scope():
      best = best_lib.BestWeights(model, config.run.tuning_metric)
  run_checkpoints = checkpoints_lib.RunCheckpoints(
      model, optimizer, checkpoint_dir, config.run.keep_checkpoints,
      **(best.trackables() if best else {}))
  if checkpoints_lib.checkpoints_newest_first(locations.checkpoints):
    workdir_lib.check_resumable(locations, config, data.identity)
  start_step = run_checkpoints.restore_newest_readable(locations.checkpoints)
  if not start_step and config.training.warm_start:  # A resumed run has its own weights.
    warm_start.initialize(model, config, data.metadata)
  # Records past the restored step belong to an interrupted run: its steps are run again.
  history = [record for record in workdir_lib.previous_results(locations).get("history", [])
             if start_step and record["step"] <= start_step]
  cudnn_problems = model_lib.cudnn_ineligibility(model)
  logging.info("Model: %d parameters; %s; precision %s.", model.count_params(),
               "eligible for the fused cuDNN kernel on GPU" if not cudnn_problems else
               f"NOT eligible for cuDNN: {cudnn_problems}", precision)
  if chief:
    with _writing(locations.workdir, "Writing the run record"):
      storage.write_json_atomically(
          locations.file(workdir_lib.RUN_RECORD_FILE),
          workdir_lib.run_record(config, data.identity, precision=precision,
                                 total_steps=data.total_steps,
                                 steps_per_epoch=data.steps_per_epoch))
      if start_step < data.end_step:  # Steps to train: a start that may loop.
        workdir_lib.record_start(locations, start_step, config.run.max_restarts_without_progress)
  return _Run(config, data, strategy, chief, precision, model, optimizer, run_checkpoints,
              locations.checkpoints, best, start_step, history)


def _build_evaluate(run, evaluations):
  """evaluate(split) -> metrics of a split, with the weights the model holds."""
  if not evaluations:
    return None
  eval_step = steps.build_eval_step(run.strategy, run.model,
                                    evaluations["validation"].element_spec)
  return lambda split: steps.evaluate(eval_step, evaluations[split],
                                      lambda: datasets.reading(run.config.run.data_dir))


def _train(run, train_step, batches, evaluate, *, on_preemption, summaries, profiler):
  """Runs the steps from the restored one to the end, with logs, validation and checkpoints.

  Returns:
    Seconds spent in training steps (input included, evaluation and saving not).
  """
  config, data = run.config.run, run.data
  log = train_log.TrainLog(data.total_steps, run.start_step, run.config.training.global_batch_size,
                           show_progress_bar=run.chief and sys.stdout.isatty(),
                           summaries=summaries)
  logging.info("Training steps %d to %d of %d (%d per epoch), global batch %d on %d replicas.",
               run.start_step, data.end_step, data.total_steps, data.steps_per_epoch,
               run.config.training.global_batch_size, run.strategy.num_replicas_in_sync)
  train_seconds, current = 0.0, run.start_step
  while current < data.end_step:
    current += 1
    profiler.before_step(current)
    step_start = time.perf_counter()
    with datasets.reading(run.config.run.data_dir):  # Storage errors are not lost peers.
      batch = next(batches)
    input_seconds = time.perf_counter() - step_start
    loss_sum, correct = train_step(batch, current)
    run.checkpoints.step.assign(current)
    train_seconds += time.perf_counter() - step_start
    profiler.after_step(current)
    log.add(current, loss_sum, correct, input_seconds)
    is_last = current == data.end_step
    save = current % config.checkpoint_every_steps == 0 or is_last
    validate = evaluate and (current % data.eval_every_steps == 0 or is_last)
    try:
      if current % config.log_every_steps == 0 or save or validate:  # A NaN loss stops a save.
        train = log.flush(current, optimization.current_learning_rate(run.optimizer))
        record = {"step": current, "epoch": round(current / data.steps_per_epoch, 3),
                  "train": train}
        if validate:
          with log.excluded():
            record["validation"] = _validate(run, evaluate, current, summaries)
        run.history.append(record)
      if save:
        with log.excluded():
          run.checkpoints.save(current)  # NonFiniteState if a weight went NaN behind a finite loss.
    except train_log.TrainingDiverged as e:
      current = _recover_from_nan(run, e, current, log)
      continue
    try:
      on_preemption.after_step(current)
    except checkpoints_lib.NonFiniteState as e:  # SIGTERM: nothing good to save.
      raise errors.Preempted(current, saved=False) from e
  return train_seconds


def _validate(run, evaluate, step, summaries):
  """Evaluates the validation split with the evaluation weights; keeps them if the best.

  Only the run's own validation steps (every `eval_every_steps`, and the last) compete for the
  best: the end of a `--max_steps` segment does not, so that a run stopped and resumed there
  picks the weights an uninterrupted one picks.
  """
  scheduled = step % run.data.eval_every_steps == 0 or step == run.data.total_steps
  with steps.evaluation_weights(run.model, run.optimizer):
    metrics = evaluate("validation")
    if run.best and scheduled and run.best.offer(run.model, metrics, step):
      logging.info("New best validation %s: %.5f.", run.best.metric, metrics[run.best.metric])
  train_log.log_evaluation(summaries, "validation", metrics, step)
  return metrics


def _recover_from_nan(run, error, step, log):
  """Rolls back to the last checkpoint and skips the batches since; returns the step restored.

  As TF Model Garden's `recovery_max_trials`: the batches of the failed steps are not trained
  on again, so one bad batch cannot cause the same NaN twice. Every worker detects the NaN at
  the same step (the loss is summed over all of them, the weights are mirrored) and restores
  the same checkpoint, from the run's folder. The data offset adds up over recoveries: the
  training stream goes on where it is, so the skipped batches of every recovery stay skipped,
  and a later resume from a checkpoint sees the batches this run sees.

  Raises:
    TrainingDiverged: after --max_nan_recoveries recoveries, or with no checkpoint to go back to.
  """
  if (run.nan_recoveries >= run.config.run.max_nan_recoveries
      or not checkpoints_lib.checkpoints_newest_first(run.run_checkpoints_dir)):
    if run.nan_recoveries:
      raise train_log.TrainingDiverged(f"{error} ({run.nan_recoveries} recoveries tried.)")
    raise error
  offset = int(run.checkpoints.data_offset)  # The live stream's; the restore brings an older one.
  restored = run.checkpoints.restore_newest_readable(run.run_checkpoints_dir)
  run.checkpoints.data_offset.assign(offset + step - restored)
  run.nan_recoveries += 1
  run.history[:] = [record for record in run.history if record["step"] <= restored]
  log.restart(restored)
  logging.warning("%s Recovery %d of %d: back to step %d, skipping the batches of steps %d-%d.",
                  error, run.nan_recoveries, run.config.run.max_nan_recoveries, restored,
                  restored + 1, step)
  return restored


def _tested_weights(run):
  """Context in which the model holds the weights to test and export; yields their step.

  The best validation's with --export=best, else the final evaluation (moving average) weights.
  """
  if run.best and int(run.best.step.numpy()):  # A MirroredVariable under many workers.
    return run.best.in_model(run.model)
  return _final_weights(run)


@contextlib.contextmanager
def _final_weights(run):
  """The final evaluation weights in the model; yields the final step."""
  with steps.evaluation_weights(run.model, run.optimizer):
    yield max(run.data.end_step, run.start_step)


def _validation_at(run, step):
  """The validation metrics recorded at `step`, if any."""
  return next((record["validation"] for record in reversed(run.history)
               if record["step"] == step and "validation" in record), None)


def _results(run, train_seconds):
  """The results of the run, before evaluation."""
  trained_steps = run.data.end_step - run.start_step
  batch = run.config.training.global_batch_size
  return {
      "history": run.history, "config": dataclasses.asdict(run.config),
      "versions": workdir_lib.versions(), "data": run.data.identity, "precision": run.precision,
      "parameters": run.model.count_params(),
      "cudnn_eligible": not model_lib.cudnn_ineligibility(run.model),
      "start_step": run.start_step, "step": max(run.data.end_step, run.start_step),
      "nan_recoveries": run.nan_recoveries,
      "total_steps": run.data.total_steps,
      "strategy": {"name": type(run.strategy).__name__,
                   "workers": strategy_lib.num_workers(run.strategy),
                   "replicas": run.strategy.num_replicas_in_sync},
      "examples_per_s": round(trained_steps * batch / train_seconds, 1) if trained_steps > 0
                        else None}


def _export_and_report(run, results, serving_weights, locations):
  """Exports the tested weights and reports to a Vertex tuning job (on the chief)."""
  metadata = run.data.metadata
  vocabulary = text.load_vocabulary(storage.join(run.config.run.data_dir,
                                                 metadata["vocab_file"]))
  classifier = export.build_classifier(run.config, serving_weights, vocabulary)
  facts = {key: results[key] for key in ("test", "validation", "config", "versions", "data",
                                          "step", "precision")}
  facts["data_statistics"] = statistics.split_summaries(metadata)  # The next retraining's baseline.
  facts["drift_baseline"] = review_signals.baseline(classifier, run.config.run.data_dir, metadata)
  with _writing(locations.export, "Exporting the model"):
    results["export"] = export.export(classifier, locations.export, facts,
                                      versioned=locations.versioned_export)
  logging.info("Exported the model for serving to %s.", results["export"])
  if tuning.is_tuning_trial():
    metric = run.config.run.tuning_metric
    tuning.report_tuning_metric(metric, results["validation"][metric], results["step"])


@contextlib.contextmanager
def _debug_mode(enabled):
  """Inside the block, when enabled: tf.functions run eagerly and every op checks for NaN."""
  if not enabled:
    yield
    return
  tf.config.run_functions_eagerly(True)
  tf.debugging.enable_check_numerics()
  try:
    yield
  finally:
    tf.debugging.disable_check_numerics()
    tf.config.run_functions_eagerly(False)
