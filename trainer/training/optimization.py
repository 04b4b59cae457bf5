"""Precision, learning-rate schedule and optimizer, and building the model with them."""

import keras
import tensorflow as tf

from trainer.modeling import model as model_lib


def resolve_precision(name):
  """The Keras dtype policy for --precision: auto = float16 on tensor-core GPUs, else float32."""
  if name != "auto":
    return name
  if tf.config.list_logical_devices("TPU"):
    return "mixed_bfloat16"
  for gpu in tf.config.list_physical_devices("GPU"):
    if tf.config.experimental.get_device_details(gpu).get("compute_capability", (0, 0)) >= (7, 0):
      return "mixed_float16"
  return "float32"


class TrainerOptimizer:
  """Optimizer mixin: no all-reduce inside `apply`, and a moving average with a warm-up.

  Keras all-reduces gradients inside `apply`, after it has clipped them, so each replica would
  clip its own partial gradient, and LossScaleOptimizer would test finiteness on un-reduced
  gradients. The train step all-reduces once, first; clipping and the finiteness test then see
  the true global gradient, identical on every replica. This overrides a private Keras method
  (`_all_reduce_sum_gradients`); tests/training/test_optimization.py fails if Keras stops calling it.

  The moving average of the weights (EMA) starts as a copy of the weights after the first step
  (Keras' averages start at zero), then moves with momentum min(ema_momentum, (1 + t) / (10 + t))
  at step t as TF Model Garden's, so that early validations and a short run's export are not
  mostly the first steps' weights. This overrides
  Keras' `_update_model_variables_moving_average`, pinned by the same tests.

  Clipping by global norm uses the norm of the dense gradient. Keras squares the rows of an
  embedding's IndexedSlices gradient one by one, so a token seen 50 times counts as 50 rows,
  not one: its norm, and so the clipping, would depend on whether the gradient travels dense
  or sparse (`--dense_gradients`, and with `auto` the number of replicas). Repeated rows are
  summed first here (`_clip_gradients`, pinned by the same tests).
  """

  def _all_reduce_sum_gradients(self, grads_and_vars):
    """Returns the (already reduced) gradients unchanged."""
    return list(grads_and_vars)

  def _clip_gradients(self, grads):
    """Clips to `global_clipnorm` by the norm of the dense gradients (see the class doc)."""
    if not self.global_clipnorm:
      return super()._clip_gradients(grads)
    norm = tf.linalg.global_norm([_dense_rows(g) for g in grads if g is not None])
    scale = self.global_clipnorm * tf.minimum(1.0 / norm, 1.0 / self.global_clipnorm)
    scale += norm - norm  # NaN when the norm is not finite, as Keras' own clipping does.
    return [_times(g, scale) for g in grads]

  def _update_model_variables_moving_average(self, trainable_variables):
    """Moves each average towards its weight with the warmed-up momentum."""
    if not self.use_ema:
      return
    step = tf.cast(self.iterations, tf.float32)
    momentum = tf.where(step > 0, tf.minimum(tf.cast(self.ema_momentum, tf.float32),
                                             (1 + step) / (10 + step)), 0.0)
    for weight, average in zip(trainable_variables, self._model_variables_moving_average):
      average.assign(momentum * average + (1 - momentum) * tf.cast(weight, average.dtype))


def _dense_rows(gradient):
  """The values of a gradient; for IndexedSlices, its rows with repeated indices summed."""
  if not isinstance(gradient, tf.IndexedSlices):
    return gradient
  unique, positions = tf.unique(gradient.indices)
  return tf.math.unsorted_segment_sum(gradient.values, positions, tf.size(unique))


def _times(gradient, scale):
  """`gradient` (dense, IndexedSlices or None) multiplied by `scale`."""
  if gradient is None:
    return None
  scale = tf.cast(scale, gradient.dtype)
  if isinstance(gradient, tf.IndexedSlices):
    return tf.IndexedSlices(gradient.values * scale, gradient.indices, gradient.dense_shape)
  return gradient * scale


class _Adam(TrainerOptimizer, keras.optimizers.Adam):
  """Adam for the train step (see TrainerOptimizer)."""


class _AdamW(TrainerOptimizer, keras.optimizers.AdamW):
  """AdamW for the train step (see TrainerOptimizer)."""


class _SGD(TrainerOptimizer, keras.optimizers.SGD):
  """Plain SGD for the train step (see TrainerOptimizer)."""


def build_learning_rate(training, total_steps):
  """Linear warm-up to the peak (the first step already learns), then constant or cosine to 0.

  Args:
    training: a `config.TrainingConfig`.
    total_steps: steps of the whole run.
  """
  warmup = min(training.warmup_steps, max(total_steps - 1, 0))
  if training.schedule == "constant" and not warmup:
    return training.learning_rate
  decay_steps = max(total_steps - warmup, 1) if training.schedule == "cosine" else 1 << 40
  return keras.optimizers.schedules.CosineDecay(
      initial_learning_rate=training.learning_rate / (warmup + 1), decay_steps=decay_steps,
      warmup_target=training.learning_rate if warmup else None, warmup_steps=warmup)


def build_optimizer(training, total_steps, precision):
  """The optimizer of a `config.TrainingConfig`, wrapped in dynamic loss scaling for float16."""
  kwargs = {"learning_rate": build_learning_rate(training, total_steps),
            "global_clipnorm": training.clip_norm or None}
  if training.ema_momentum:
    kwargs.update(use_ema=True, ema_momentum=training.ema_momentum)
  if training.optimizer == "adamw":
    optimizer = _AdamW(weight_decay=training.weight_decay, name="adamw", **kwargs)
  elif training.optimizer == "sgd":
    optimizer = _SGD(name="sgd", **kwargs)
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
    optimizer = build_optimizer(config.training, total_steps, precision)
    optimizer.build(model.trainable_variables)  # Before tracing: MirroredStrategy needs it.
  return model, optimizer


def inner_optimizer(optimizer):
  """The optimizer itself, or the one a LossScaleOptimizer wraps."""
  return getattr(optimizer, "inner_optimizer", optimizer)


def current_learning_rate(optimizer):
  """The learning rate the optimizer uses at its current iteration."""
  inner = inner_optimizer(optimizer)
  rate = inner.learning_rate
  return float(rate(inner.iterations) if callable(rate) else rate)


def moving_averages(optimizer):
  """The moving averages of the trainable weights (EMA), in their order; None when EMA is off.

  They live in a private attribute of the Keras optimizer; tests/training/test_optimization.py fails if
  it moves.
  """
  inner = inner_optimizer(optimizer)
  if not inner.use_ema:
    return None
  return inner._model_variables_moving_average  # pylint: disable=protected-access
