"""Precision, learning-rate schedule and optimizer, and building the model with them."""

import keras
import tensorflow as tf

from trainer.training import model as model_lib


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


class AppliesGradientsAsGiven:
  """Optimizer mixin: no all-reduce inside `apply`.

  Keras all-reduces gradients inside `apply`, after it has clipped them, so each replica would
  clip its own partial gradient, and LossScaleOptimizer would test finiteness on un-reduced
  gradients. The train step all-reduces once, first; clipping and the finiteness test then see
  the true global gradient, identical on every replica. This overrides a private Keras method
  (`_all_reduce_sum_gradients`); tests/test_optimization.py fails if Keras stops calling it.
  """

  def _all_reduce_sum_gradients(self, grads_and_vars):
    """Returns the (already reduced) gradients unchanged."""
    return list(grads_and_vars)


class _Adam(AppliesGradientsAsGiven, keras.optimizers.Adam):
  """Adam that applies already all-reduced gradients."""


class _AdamW(AppliesGradientsAsGiven, keras.optimizers.AdamW):
  """AdamW that applies already all-reduced gradients."""


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

  They live in a private attribute of the Keras optimizer; tests/test_optimization.py fails if
  it moves.
  """
  inner = inner_optimizer(optimizer)
  if not inner.use_ema:
    return None
  return inner._model_variables_moving_average  # pylint: disable=protected-access
