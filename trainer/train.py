r"""Trains and evaluates the BiLSTM with one custom loop for every distribution strategy.

  python -m trainer.train --data_dir=/tmp/imdb_prepared --workdir=/tmp/imdb_run

Without --data_dir it first prepares the data from --input (a local aclImdb tarball or folder,
`tfds`, or empty to download) into <workdir>/data. The same command runs on one CPU or GPU, on
the GPUs of one host (MirroredStrategy), or on many hosts (MultiWorkerMirroredStrategy, from
TF_CONFIG, CLUSTER_SPEC, an Indexed Job or flags); Keras `fit` is not used because it fails
under MultiWorkerMirroredStrategy here.

A run started again on the same --workdir resumes at the exact step of its last readable
checkpoint: the data position is recomputed from the step. SIGTERM saves the current step and
exits with code 42 (see trainer.preemption). Only the chief writes to --workdir: checkpoints/,
tensorboard/, config.json, metrics.json and export/ (the SavedModel; see trainer.export).
"""

import contextlib
import dataclasses
import hashlib
import json
import math
import platform
import shutil
import sys
import tempfile
import time

from absl import flags
from absl import logging
import keras
import numpy as np
import tensorflow as tf

from trainer import config_flags
from trainer import distribution
from trainer import errors
from trainer import export
from trainer import input_pipeline
from trainer import metrics as metrics_lib
from trainer import model as model_lib
from trainer import prepare
from trainer import preemption
from trainer import prepared_dataset
from trainer import sources
from trainer import storage
from trainer import text
from trainer import vertex
from trainer.errors import UserInputError

PRECISION_CHOICES = ("auto", "float32", "mixed_float16", "mixed_bfloat16")
# Config fields that may change when a run is resumed: they do not change what is computed.
_BOOKKEEPING_FIELDS = ("eval_batch_size", "eval_every_steps", "checkpoint_every_steps",
                       "keep_checkpoints", "log_every_steps")
_DENSE_GRADIENT_MIN_BATCH = 100  # Above this per-replica batch a dense all-reduce is cheaper.
# What a multi-worker step raises when a peer dies (connection reset) or stops answering (the
# coordination service's missed heartbeats, about 10 s).
_PEER_FAILURES = (tf.errors.UnavailableError, tf.errors.DeadlineExceededError,
                  tf.errors.AbortedError)


class TrainingDiverged(UserInputError):
  """The loss became NaN or infinite."""


@dataclasses.dataclass(frozen=True)
class RunOptions:
  """How to run, as opposed to what to compute (that is the Config)."""
  data_dir: str | None = None  # A prepared dataset; unused with synthetic_data.
  strategy: str = "auto"  # See distribution.build_strategy.
  precision: str = "auto"  # float32, mixed_float16, mixed_bfloat16, or auto for the hardware.
  max_steps: int | None = None  # Stop after this step (the schedule still spans all epochs).
  deterministic: bool = False  # Op determinism: reruns and resumed runs give the same weights.
  debug: bool = False  # Run eagerly with numeric checks.
  synthetic_data: bool = False  # Train on generated batches, no dataset, no evaluation.
  synthetic_steps: int = 100  # Steps of a synthetic run.
  tuning_metric: str = "accuracy"  # Validation metric reported to a Vertex tuning job.


# --- Precision and optimizer.


def resolve_precision(name):
  """The Keras dtype policy for --precision: auto = float16 on tensor-core GPUs, else float32."""
  if name not in PRECISION_CHOICES:
    raise UserInputError(f"--precision={name}: choose one of {PRECISION_CHOICES}.")
  if name != "auto":
    return name
  if tf.config.list_logical_devices("TPU"):
    return "mixed_bfloat16"
  for gpu in tf.config.list_physical_devices("GPU"):
    if tf.config.experimental.get_device_details(gpu).get("compute_capability", (0, 0)) >= (7, 0):
      return "mixed_float16"
  return "float32"


class _AppliesGradientsAsGiven:
  """Optimizer mixin: no all-reduce inside `apply`.

  Keras all-reduces gradients inside `apply`, after it has clipped them, so each replica would
  clip its own partial gradient, and LossScaleOptimizer would test finiteness on un-reduced
  gradients. The train step all-reduces once, first; clipping and the finiteness test then see
  the true global gradient, identical on every replica.
  """

  def _all_reduce_sum_gradients(self, grads_and_vars):
    """Returns the (already reduced) gradients unchanged."""
    return list(grads_and_vars)


class _Adam(_AppliesGradientsAsGiven, keras.optimizers.Adam):
  """Adam that applies already all-reduced gradients."""


class _AdamW(_AppliesGradientsAsGiven, keras.optimizers.AdamW):
  """AdamW that applies already all-reduced gradients."""


def build_learning_rate(config, total_steps):
  """Linear warm-up to the peak (the first step already learns), then constant or cosine to 0."""
  warmup = min(config.warmup_steps, max(total_steps - 1, 0))
  if config.schedule == "constant" and not warmup:
    return config.learning_rate
  decay_steps = max(total_steps - warmup, 1) if config.schedule == "cosine" else 1 << 40
  return keras.optimizers.schedules.CosineDecay(
      initial_learning_rate=config.learning_rate / (warmup + 1), decay_steps=decay_steps,
      warmup_target=config.learning_rate if warmup else None, warmup_steps=warmup)


def build_optimizer(config, total_steps, precision):
  """The optimizer of the config, wrapped in dynamic loss scaling for float16."""
  kwargs = {"learning_rate": build_learning_rate(config, total_steps),
            "global_clipnorm": config.clip_norm or None}
  if config.ema_momentum:
    kwargs.update(use_ema=True, ema_momentum=config.ema_momentum)
  if config.optimizer == "adamw":
    optimizer = _AdamW(weight_decay=config.weight_decay, name="adamw", **kwargs)
  else:
    optimizer = _Adam(name="adam", **kwargs)
  if precision == "mixed_float16":
    optimizer = keras.optimizers.LossScaleOptimizer(optimizer)
  return optimizer


def build_model_and_optimizer(strategy, config, total_steps, precision):
  """The model and its optimizer under `strategy`, with the optimizer's variables built.

  Returns:
    (keras.Model, optimizer).
  """
  keras.mixed_precision.set_global_policy(precision)
  with strategy.scope():
    model = model_lib.build_model(config)
    optimizer = build_optimizer(config, total_steps, precision)
    optimizer.build(model.trainable_variables)  # Before tracing: MirroredStrategy needs it.
  return model, optimizer


def current_learning_rate(optimizer):
  """The learning rate the optimizer uses at its current iteration."""
  inner = getattr(optimizer, "inner_optimizer", optimizer)
  rate = inner.learning_rate
  return float(rate(inner.iterations) if callable(rate) else rate)


# --- Steps.


def _uses_dense_gradients(config, per_replica_batch_size):
  """Whether embedding gradients are all-reduced dense rather than as IndexedSlices."""
  if config.dense_gradients == "auto":
    return per_replica_batch_size >= _DENSE_GRADIENT_MIN_BATCH
  return config.dense_gradients == "always"


def build_train_step(strategy, model, optimizer, config, element_spec):
  """A tf.function running one step on every replica.

  Returns:
    train_step(batch) -> (sum of per-example losses, number correct) over the global batch.
  """
  global_batch_size = config.global_batch_size
  dense = _uses_dense_gradients(config, global_batch_size // strategy.num_replicas_in_sync)

  def replica_step(tokens, labels):
    """Forward, backward, one all-reduce of the gradients, update."""
    with tf.GradientTape() as tape:
      logits = model(tokens, training=True)[:, 0]
      losses = tf.nn.sigmoid_cross_entropy_with_logits(
          labels=tf.cast(labels, tf.float32), logits=logits)
      # Gradients are summed across replicas, so each averages over the global batch.
      loss = tf.nn.compute_average_loss(losses, global_batch_size=global_batch_size)
      scaled_loss = optimizer.scale_loss(loss)
    gradients = tape.gradient(scaled_loss, model.trainable_variables)
    if dense:
      gradients = [tf.convert_to_tensor(g) for g in gradients]
    if strategy.num_replicas_in_sync > 1:
      gradients = tf.distribute.get_replica_context().all_reduce(
          tf.distribute.ReduceOp.SUM, gradients)
    optimizer.apply(gradients, model.trainable_variables)
    correct = tf.reduce_sum(tf.cast(tf.equal(tf.cast(logits > 0, tf.int32), labels), tf.int32))
    return tf.reduce_sum(losses), correct

  @tf.function(input_signature=[element_spec])
  def train_step(batch):
    """Runs the replicas' steps and sums their statistics."""
    loss_sum, correct = strategy.run(replica_step, args=batch)
    return (strategy.reduce(tf.distribute.ReduceOp.SUM, loss_sum, axis=None),
            strategy.reduce(tf.distribute.ReduceOp.SUM, correct, axis=None))

  return train_step


def build_eval_step(strategy, model, element_spec):
  """A tf.function predicting one batch per replica.

  Returns:
    eval_step(batch) -> (probabilities, labels, losses) of all replicas, gathered.
  """
  def replica_step(tokens, labels):
    """Probabilities and losses of one batch."""
    logits = model(tokens, training=False)[:, 0]
    losses = tf.nn.sigmoid_cross_entropy_with_logits(
        labels=tf.cast(tf.maximum(labels, 0), tf.float32), logits=logits)
    return tf.sigmoid(logits), labels, losses

  @tf.function(input_signature=[element_spec])
  def eval_step(batch):
    """Gathers every replica's predictions."""
    outputs = strategy.run(replica_step, args=batch)
    return tuple(strategy.gather(value, axis=0) for value in outputs)

  return eval_step


@contextlib.contextmanager
def evaluation_weights(model, optimizer):
  """Inside the block the model holds the moving average of its weights (when EMA is on).

  The averages and the trained weights trade places on entry and again on exit, so training
  continues from its own weights and checkpoints keep both.
  """
  inner = getattr(optimizer, "inner_optimizer", optimizer)
  if not inner.use_ema:
    yield
    return
  averages = inner._model_variables_moving_average  # pylint: disable=protected-access
  pairs = list(zip(model.trainable_variables, averages))

  def swap():
    """Exchanges the values of each weight and its average."""
    for weight, average in pairs:
      value = tf.identity(weight.value)
      weight.assign(average.value)
      average.assign(value)

  swap()
  try:
    yield
  finally:
    swap()


def evaluate(eval_step, dataset):
  """Evaluates a distributed `endless` evaluation dataset: stops when every replica is done.

  Returns:
    Dict of metrics (see `metrics.classification_metrics`).
  """
  probabilities, labels, losses = [], [], []
  for batch in dataset:
    batch_probabilities, batch_labels, batch_losses = (v.numpy() for v in eval_step(batch))
    real = batch_labels >= 0  # Filler batches of finished pipelines have label -1.
    if not real.any():
      break
    probabilities.append(batch_probabilities[real])
    labels.append(batch_labels[real])
    losses.append(batch_losses[real])
  return metrics_lib.classification_metrics(
      np.concatenate(probabilities), np.concatenate(labels), np.concatenate(losses))


# --- Bookkeeping.


def _random_generator_states(model):
  """The dropout generators' state variables: not weights, so not in the model's checkpoint."""
  weights = {id(weight) for weight in model.weights}
  return [variable.value for variable in model.variables if id(variable) not in weights]


def weights_sha256(model):
  """Checksum of every weight, to compare replicas, workers and runs."""
  digest = hashlib.sha256()
  for weight in model.weights:
    digest.update(np.ascontiguousarray(weight.numpy()).tobytes())
  return digest.hexdigest()


def versions():
  """Versions of what produced a result."""
  return {"python": platform.python_version(), "tensorflow": tf.__version__,
          "keras": keras.__version__, "numpy": np.__version__}


def _check_writable(workdir):
  """Fails now, not after an hour, when the workdir cannot be written."""
  probe = storage.join(workdir, ".write_probe")
  try:
    tf.io.gfile.makedirs(workdir)
    with tf.io.gfile.GFile(probe, "w") as f:
      f.write("ok")
    tf.io.gfile.remove(probe)
  except (tf.errors.OpError, OSError) as e:
    raise UserInputError(f"Cannot write to --workdir={workdir} ({e}). Choose a folder this job "
                         "can write (a local path or a gs:// bucket it has access to).") from e


def _data_identity(data_dir, metadata):
  """What a checkpoint's weights depend on in the data: the vocabulary."""
  vocab_path = storage.join(data_dir, metadata["vocab_file"])
  return {"data_dir": data_dir, "fingerprint": metadata["fingerprint"],
          "source": metadata["source"], "vocab_size": metadata["vocab_size"],
          "vocab_sha256": sources.sha256_of_file(vocab_path)}


def _check_resumable(run_record, config, data):
  """Refuses to resume a run whose config or vocabulary differ from this one's."""
  old_config = {k: v for k, v in run_record["config"].items() if k not in _BOOKKEEPING_FIELDS}
  new_config = {k: v for k, v in json.loads(json.dumps(dataclasses.asdict(config))).items()
                if k not in _BOOKKEEPING_FIELDS}
  changed = sorted(k for k in new_config if old_config.get(k) != new_config[k])
  if changed:
    raise UserInputError(
        f"The checkpoints in this --workdir were trained with other values of {changed} "
        f"({ {k: old_config.get(k) for k in changed} }). Use a new --workdir, or the same "
        "settings to resume.")
  old_data = run_record.get("data") or {}
  if data and old_data.get("vocab_sha256") != data["vocab_sha256"]:
    raise UserInputError(
        f"The checkpoints in this --workdir were trained with the vocabulary of "
        f"{old_data.get('data_dir')} (size {old_data.get('vocab_size')}), and "
        f"{data['data_dir']} has another (size {data['vocab_size']}): the embedding rows would "
        "mean other words. Use the original --data_dir, or a new --workdir.")


class _TrainLog:
  """Accumulates step statistics between log lines and writes the line and summaries."""

  def __init__(self, total_steps, start_step, global_batch_size, show_progress_bar):
    """Starts the first interval at `start_step`."""
    self.total_steps = total_steps
    self.global_batch_size = global_batch_size
    self.progress_bar = keras.utils.Progbar(total_steps) if show_progress_bar else None
    self._reset(start_step)

  def _reset(self, step):
    """Starts a new interval at `step`."""
    self.interval_start_step = step
    self.interval_start_time = time.perf_counter()
    self.input_seconds = 0.0
    self.loss_sum = self.correct = 0

  def add(self, step, loss_sum, correct, input_seconds):
    """Adds one step's (device) statistics without waiting for them."""
    self.loss_sum += loss_sum
    self.correct += correct
    self.input_seconds += input_seconds
    if self.progress_bar:
      self.progress_bar.update(step)

  def flush(self, step, learning_rate):
    """Logs the interval ending at `step`; returns its statistics. Raises on a NaN loss."""
    seconds = time.perf_counter() - self.interval_start_time
    steps = step - self.interval_start_step
    examples = steps * self.global_batch_size
    loss = float(self.loss_sum) / max(examples, 1)
    if not math.isfinite(loss):
      raise TrainingDiverged(
          f"The training loss became {loss} between steps {self.interval_start_step} and {step}. "
          "The last good checkpoint is kept. Lower --learning_rate, set --clip_norm, or use "
          "--precision=float32; --debug finds the first op that goes non-finite.")
    stats = {"step": step, "loss": round(loss, 5),
             "accuracy": round(float(self.correct) / max(examples, 1), 5),
             "examples_per_s": round(examples / max(seconds, 1e-9), 1),
             "input_wait_fraction": round(self.input_seconds / max(seconds, 1e-9), 4),
             "learning_rate": learning_rate}
    eta = (self.total_steps - step) * seconds / max(steps, 1)
    logging.info("train | step: %d/%d | loss: %.4f | accuracy: %.4f | steps/sec: %.2f | "
                 "examples/s: %.1f | input wait: %.1f%% | lr: %.3g | ETA: %s", step,
                 self.total_steps, stats["loss"], stats["accuracy"], steps / max(seconds, 1e-9),
                 stats["examples_per_s"],
                 100 * stats["input_wait_fraction"], learning_rate,
                 time.strftime("%H:%M:%S", time.gmtime(eta)))
    with tf.name_scope("train"):
      for name in ("loss", "accuracy", "examples_per_s", "input_wait_fraction", "learning_rate"):
        tf.summary.scalar(name, stats[name], step=step)
    self._reset(step)
    return stats


def _write_evaluation_summaries(split, results, step):
  """TensorBoard scalars of an evaluation."""
  with tf.name_scope(split):
    for name, value in results.items():
      tf.summary.scalar(name, value, step=step)


# --- The run.


def _resolve_data(config, options):
  """Reads the dataset's metadata and fits the vocabulary size to it.

  Returns:
    (config, metadata or None, data identity or None, training examples per epoch).
  """
  if options.synthetic_data:
    return config, None, None, options.synthetic_steps * config.global_batch_size
  if not options.data_dir:
    raise UserInputError("Give --data_dir=<a prepared dataset> (python -m trainer.prepare "
                         "makes one), or --synthetic_data.")
  metadata = prepared_dataset.load_metadata(options.data_dir)
  if config.vocab_size > metadata["vocab_size"]:
    logging.info("The dataset has %d ids; using them all (vocab_size %d asked).",
                 metadata["vocab_size"], config.vocab_size)
    config = dataclasses.replace(config, vocab_size=metadata["vocab_size"])
  return (config, metadata, _data_identity(options.data_dir, metadata),
          metadata["splits"]["train"]["examples"])


def _build_datasets(strategy, config, options, metadata, start_step):
  """The distributed training data (from `start_step` on) and evaluation data.

  Returns:
    (training dataset, {"validation": ..., "test": ...} or {} with synthetic data).
  """
  per_replica_batch_size = config.global_batch_size // strategy.num_replicas_in_sync

  def training_dataset(context):
    """This worker's training batches, from the restored step on."""
    if options.synthetic_data:
      return input_pipeline.make_synthetic_dataset(per_replica_batch_size, config.max_length,
                                                   config.vocab_size, seed=config.seed)
    return input_pipeline.make_dataset(
        prepared_dataset.split_files(options.data_dir, "train", metadata), per_replica_batch_size,
        training=True, max_length=config.max_length, keep=config.keep, seed=config.seed,
        input_context=context, start_step=start_step,
        sort_window_batches=config.sort_window_batches)

  def evaluation_dataset(split):
    """This worker's evaluation batches, then fillers until every worker is done."""
    return strategy.distribute_datasets_from_function(
        lambda context: input_pipeline.make_dataset(
            prepared_dataset.split_files(options.data_dir, split, metadata),
            config.eval_batch_size, training=False, max_length=config.max_length,
            keep=config.keep, input_context=context, endless=True))

  training = strategy.distribute_datasets_from_function(training_dataset)
  if options.synthetic_data:
    return training, {}
  return training, {split: evaluation_dataset(split) for split in ("validation", "test")}


def _checkpoints_newest_first(directory):
  """The checkpoint prefixes (ckpt-N) in `directory`, newest first, read from the file names."""
  numbers = []
  for index_file in tf.io.gfile.glob(storage.join(directory, "ckpt-*.index")):
    number = index_file[:-len(".index")].rsplit("-", 1)[1]
    if number.isdigit():
      numbers.append(int(number))
  return [storage.join(directory, f"ckpt-{number}") for number in sorted(numbers, reverse=True)]


def _restore(checkpoint, locations, config, data):
  """Restores the newest readable checkpoint of the run, if any, after checking it fits this run.

  A checkpoint that cannot be read (truncated, corrupt) is skipped with a warning for the one
  before it.

  Returns:
    The results of the earlier run (its metrics.json), or {} for a new run.
  """
  workdir = locations.workdir
  candidates = _checkpoints_newest_first(locations.checkpoints)
  if not candidates:
    return {}
  run_record_path = storage.join(workdir, "config.json")
  if tf.io.gfile.exists(run_record_path):
    _check_resumable(storage.read_json(run_record_path), config, data)
  problems = []
  for path in candidates:
    try:
      checkpoint.restore(path).assert_existing_objects_matched()
    except (tf.errors.OpError, ValueError, IndexError, AssertionError) as e:  # Truncated, garbled.
      logging.warning("Checkpoint %s cannot be read (%s: %s); trying the one before it.", path,
                      type(e).__name__, errors.first_line(e))
      problems.append(f"{path}: {type(e).__name__}")
      continue
    logging.info("Resumed from %s at step %d.", path, int(checkpoint.step))
    metrics_path = storage.join(workdir, "metrics.json")
    return storage.read_json(metrics_path) if tf.io.gfile.exists(metrics_path) else {}
  raise UserInputError(
      f"No checkpoint in {locations.checkpoints} can be read ({'; '.join(problems)}). Move that "
      "folder away to train from the start, or use a new --workdir.")


def _export(config, weights, data_dir, metadata, results, locations):
  """Exports the model for serving raw text, with what it takes to judge it; returns its path."""
  vocabulary = text.load_vocabulary(storage.join(data_dir, metadata["vocab_file"]))
  classifier = export.build_classifier(config, weights, vocabulary)
  facts = {key: results[key] for key in ("test", "validation", "config", "versions", "data",
                                          "step", "precision")}
  path = export.export(classifier, locations.export, facts, versioned=locations.versioned_export)
  logging.info("Exported the model for serving to %s.", path)
  return path


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


def train_and_evaluate(config, workdir, options=RunOptions(), strategy=None):
  """Trains, evaluates on validation each epoch and on test at the end, and writes results.

  Args:
    config: a `config.Config`.
    workdir: output folder (local or gs://); an existing run there is resumed.
    options: `RunOptions`.
    strategy: a `tf.distribute.Strategy`; built from `options.strategy` when None.

  Returns:
    The results also written to <workdir>/metrics.json.

  Raises:
    errors.Preempted: after SIGTERM, once the checkpoint of the current step is saved.
    errors.PeerLost: when another worker of a multi-worker job is lost.
  """
  strategy = strategy or distribution.build_strategy(options.strategy)
  locations = vertex.output_locations(workdir)
  with (_debug_mode(options.debug), preemption.sigterm_flag() as sigterm,
        _checkpoint_dir(distribution.is_chief(strategy), locations) as checkpoint_dir):
    try:
      return _train_and_evaluate(config, locations, options, strategy, checkpoint_dir, sigterm)
    except tf.errors.DataLossError as e:  # A TFRecord failed its checksum or is truncated.
      if not options.data_dir:
        raise
      raise prepared_dataset.corrupt_data_error(options.data_dir, e) from e
    except _PEER_FAILURES as e:  # Collectives aborted: a peer died or missed its heartbeats.
      if distribution.num_workers(strategy) == 1:
        raise
      raise errors.PeerLost(e) from e


@contextlib.contextmanager
def _checkpoint_dir(chief, locations):
  """Where this worker saves: the run's folder, or for other workers one of their own.

  Other workers save too (the strategy needs it), in a temporary folder removed at the end.
  """
  if chief:
    yield locations.checkpoints
    return
  folder = tempfile.mkdtemp(prefix="imdb_worker_checkpoints_")
  try:
    yield folder
  finally:
    shutil.rmtree(folder, ignore_errors=True)


def _train_and_evaluate(config, locations, options, strategy, checkpoint_dir, sigterm):
  """`train_and_evaluate` inside its contexts; `sigterm` is set when SIGTERM arrives."""
  wall_start = time.perf_counter()
  config.check()
  workdir = locations.workdir
  chief = distribution.is_chief(strategy)
  if config.global_batch_size % strategy.num_replicas_in_sync:
    raise UserInputError(
        f"--global_batch_size={config.global_batch_size} does not divide evenly among "
        f"{strategy.num_replicas_in_sync} replicas; use a multiple of "
        f"{strategy.num_replicas_in_sync}.")
  if options.deterministic:
    tf.config.experimental.enable_op_determinism()
  keras.utils.set_random_seed(config.seed)
  if chief:
    _check_writable(workdir)

  config, metadata, data, train_examples = _resolve_data(config, options)
  steps_per_epoch = max(1, train_examples // config.global_batch_size)
  total_steps = (options.synthetic_steps if options.synthetic_data
                 else max(1, math.ceil(config.epochs * train_examples / config.global_batch_size)))
  end_step = min(total_steps, options.max_steps or total_steps)
  eval_every = config.eval_every_steps or steps_per_epoch

  # Model, optimizer and the checkpoint to resume from.
  precision = resolve_precision(options.precision)
  model, optimizer = build_model_and_optimizer(strategy, config, total_steps, precision)
  step = tf.Variable(0, dtype=tf.int64, trainable=False, name="step")
  checkpoint = tf.train.Checkpoint(model=model, optimizer=optimizer, step=step,
                                   random_states=_random_generator_states(model))
  previous = _restore(checkpoint, locations, config, data)
  manager = tf.train.CheckpointManager(checkpoint, checkpoint_dir,
                                       max_to_keep=config.keep_checkpoints)
  on_preemption = preemption.CheckpointOnPreemption(
      strategy, manager, sigterm, multi_worker=distribution.num_workers(strategy) > 1)
  start_step = int(step)
  cudnn_problems = model_lib.cudnn_ineligibility(model)
  logging.info("Model: %d parameters; %s; precision %s.", model.count_params(),
               "eligible for the fused cuDNN kernel on GPU" if not cudnn_problems else
               f"NOT eligible for cuDNN: {cudnn_problems}", precision)
  run_record = {"config": dataclasses.asdict(config), "data": data, "options":
                dataclasses.asdict(options), "precision": precision, "total_steps": total_steps,
                "steps_per_epoch": steps_per_epoch, "versions": versions()}
  if chief:
    storage.write_json_atomically(storage.join(workdir, "config.json"), run_record)

  train_data, evaluations = _build_datasets(strategy, config, options, metadata, start_step)
  train_step = build_train_step(strategy, model, optimizer, config, train_data.element_spec)
  if evaluations:
    eval_step = build_eval_step(strategy, model, evaluations["validation"].element_spec)

  def evaluate_split(split):
    """Metrics of a split, computed with the evaluation weights."""
    with evaluation_weights(model, optimizer):
      return evaluate(eval_step, evaluations[split])

  # The loop.
  writer = (tf.summary.create_file_writer(locations.tensorboard) if chief
            else tf.summary.create_noop_writer())
  # Records past the restored step belong to an interrupted run: its steps are run again.
  history = [record for record in previous.get("history", []) if record["step"] <= start_step]
  log = _TrainLog(total_steps, start_step, config.global_batch_size,
                  show_progress_bar=chief and sys.stdout.isatty())
  train_seconds = 0.0
  iterator = iter(train_data)
  logging.info("Training steps %d to %d of %d (%d per epoch), global batch %d on %d replicas.",
               start_step, end_step, total_steps, steps_per_epoch, config.global_batch_size,
               strategy.num_replicas_in_sync)
  with writer.as_default():
    current = start_step
    while current < end_step:
      step_start = time.perf_counter()
      batch = next(iterator)
      input_seconds = time.perf_counter() - step_start
      loss_sum, correct = train_step(batch)
      current += 1
      step.assign(current)
      train_seconds += time.perf_counter() - step_start
      log.add(current, loss_sum, correct, input_seconds)
      is_last = current == end_step
      save = current % config.checkpoint_every_steps == 0 or is_last
      validate = evaluations and (current % eval_every == 0 or is_last)
      if current % config.log_every_steps == 0 or save or validate:  # NaN is caught before a save.
        record = {"step": current, "epoch": round(current / steps_per_epoch, 3),
                  "train": log.flush(current, current_learning_rate(optimizer))}
        if validate:
          record["validation"] = evaluate_split("validation")
          _write_evaluation_summaries("validation", record["validation"], current)
          logging.info("validation | step: %d | %s", current, record["validation"])
        history.append(record)
      if save:
        preemption.save_checkpoint(manager, current)
      on_preemption.after_step(current)
    trained_steps = current - start_step
    results = {
        "history": history, "config": dataclasses.asdict(config), "versions": versions(),
        "data": data, "precision": precision, "parameters": model.count_params(),
        "cudnn_eligible": not cudnn_problems, "start_step": start_step, "step": current,
        "total_steps": total_steps,
        "strategy": {"name": type(strategy).__name__, "workers": distribution.num_workers(strategy),
                     "replicas": strategy.num_replicas_in_sync},
        "examples_per_s": round(trained_steps * config.global_batch_size / train_seconds, 1)
                          if trained_steps else None}
    if evaluations:
      last_validation = history[-1].get("validation") if trained_steps else None
      results["validation"] = last_validation or evaluate_split("validation")
      results["test"] = evaluate_split("test")
      _write_evaluation_summaries("test", results["test"], current)
      logging.info("test | step: %d | %s", current, results["test"])
  results["final_weights_sha256"] = weights_sha256(model)
  logging.info("Final weights sha256 (identical on every worker): %s",
               results["final_weights_sha256"])
  if evaluations:
    with evaluation_weights(model, optimizer):  # On every worker: it assigns mirrored weights.
      serving_weights = model.get_weights()
    if chief:
      results["export"] = _export(config, serving_weights, options.data_dir, metadata, results,
                                  locations)
  if chief and evaluations and vertex.is_tuning_trial():
    vertex.report_tuning_metric(options.tuning_metric,
                                results["validation"][options.tuning_metric], current)
  results["wall_seconds"] = round(time.perf_counter() - wall_start, 1)
  if chief:
    storage.write_json_atomically(storage.join(workdir, "metrics.json"), results)
  return results


# --- Command line.

FLAGS = flags.FLAGS


def define_run_flags():
  """Defines the flags of what to train (the config), where, and how (shared with retrain)."""
  config_flags.define_config_flags()
  prepare.define_source_flags()
  distribution.define_flags()
  defaults = RunOptions()
  flags.DEFINE_enum("strategy", defaults.strategy, distribution.STRATEGY_CHOICES,
                    "auto: multi_worker in a cluster of several workers (TF_CONFIG, "
                    "CLUSTER_SPEC, an Indexed Job or flags), mirrored with several GPUs, else "
                    "one_device.")
  flags.DEFINE_enum("precision", defaults.precision, PRECISION_CHOICES,
                    "auto: mixed_float16 on GPUs with tensor cores, mixed_bfloat16 on TPU, "
                    "else float32.")
  flags.DEFINE_integer("max_steps", None, "Stop after this step; the schedule still spans all "
                       "epochs, so a later run continues it.")
  flags.DEFINE_boolean("deterministic", defaults.deterministic, "Op determinism: the same "
                       "weights on a rerun and after a resume.")
  flags.DEFINE_boolean("debug", defaults.debug, "Run eagerly with numeric checks.")
  flags.DEFINE_enum("tuning_metric", defaults.tuning_metric, metrics_lib.METRIC_NAMES,
                    "Validation metric reported to Vertex AI when the job is a tuning trial.")


def define_flags():
  """Defines the command-line flags of train."""
  define_run_flags()
  defaults = RunOptions()
  flags.DEFINE_string("workdir", None, "Output folder (local or gs://); a run there resumes. "
                      "Default on Vertex AI: the parent folder of AIP_MODEL_DIR.")
  flags.DEFINE_string("data_dir", None, "Prepared dataset (python -m trainer.prepare). When "
                      "unset, --input is prepared into <workdir>/data first.")
  flags.DEFINE_boolean("synthetic_data", defaults.synthetic_data, "Train on generated batches "
                       "(no dataset, no evaluation), to measure throughput.")
  flags.DEFINE_integer("synthetic_steps", defaults.synthetic_steps, "Steps of --synthetic_data.")


def _workdir_from_flags():
  """--workdir, or on Vertex AI the job's (or trial's) output folder."""
  workdir = FLAGS.workdir or vertex.default_workdir()
  if not workdir:
    raise UserInputError("Give --workdir=<output folder> (local or gs://).")
  return workdir


def _data_dir_from_flags(strategy, workdir):
  """--data_dir, or <workdir>/data prepared from --input when it is not given."""
  if FLAGS.data_dir or FLAGS.synthetic_data:
    return FLAGS.data_dir
  if distribution.num_workers(strategy) > 1:
    raise UserInputError("A multi-worker job needs --data_dir: prepare the data once "
                         "(python -m trainer.prepare --output_dir=gs://...) and pass it.")
  data_dir = storage.join(workdir, "data")
  if tf.io.gfile.exists(storage.join(data_dir, prepared_dataset.METADATA_FILE)):
    logging.info("Using the dataset prepared before in %s.", data_dir)
  else:
    prepare.prepare(prepare.read_source_from_flags(), data_dir)
  return data_dir


def run_options_from_flags(data_dir):
  """The RunOptions of `define_run_flags`, for the prepared dataset `data_dir`."""
  return RunOptions(data_dir=data_dir, strategy=FLAGS.strategy, precision=FLAGS.precision,
                    max_steps=FLAGS.max_steps, deterministic=FLAGS.deterministic,
                    debug=FLAGS.debug, tuning_metric=FLAGS.tuning_metric)


def strategy_from_flags():
  """The distribution strategy of the flags; create it before any other TensorFlow op."""
  return distribution.build_strategy(FLAGS.strategy, distribution.cluster_options_from_flags())


def main(argv):
  """Trains with the configuration given by the flags."""
  if len(argv) > 1:
    raise UserInputError(f"Unexpected arguments {argv[1:]}; every option is a --flag.")
  strategy = strategy_from_flags()
  workdir = _workdir_from_flags()
  config = config_flags.config_from_flags()
  options = dataclasses.replace(run_options_from_flags(_data_dir_from_flags(strategy, workdir)),
                                synthetic_data=FLAGS.synthetic_data,
                                synthetic_steps=FLAGS.synthetic_steps)
  train_and_evaluate(config, workdir, options, strategy)


if __name__ == "__main__":
  define_flags()
  errors.run(main)
