"""The weights of the best validation so far, kept in the run's checkpoint (`--export=best`).

As Keras' `ModelCheckpoint(save_best_only=True)` and TF Model Garden's best-checkpoint exporter:
after each validation the evaluation weights are copied aside when the validation metric is the
best yet; the test split is evaluated, and the model exported, with them. The copy lives in
variables of the run's checkpoint, so a resumed run knows its best exactly as it was at that step.
"""

import contextlib

import tensorflow as tf

_LOWER_IS_BETTER = ("loss",)


class BestWeights:
  """A copy of the model's weights at its best validation by `metric`."""

  def __init__(self, model, metric):
    """Creates the copy; call inside the strategy's scope (the copy is mirrored like the model)."""
    self.metric = metric
    self.value = tf.Variable(0.0, dtype=tf.float64, trainable=False, name="best_value")
    self.step = tf.Variable(0, dtype=tf.int64, trainable=False, name="best_step")  # 0: none yet.
    self.weights = [tf.Variable(weight, trainable=False, name="best_weight")
                    for weight in model.weights]

  def trackables(self):
    """What the run's checkpoint saves of it."""
    return {"best_value": self.value, "best_step": self.step, "best_weights": self.weights}

  def _is_better(self, value):
    """Whether `value` of the metric beats the best so far (any value beats none)."""
    best = float(self.value.numpy())
    if not int(self.step.numpy()):
      return True
    return value < best if self.metric in _LOWER_IS_BETTER else value > best

  def offer(self, model, metrics, step):
    """Keeps the model's current weights if `metrics` (a validation) is the best yet.

    Returns:
      Whether they were kept.
    """
    if not self._is_better(metrics[self.metric]):
      return False
    for copy, weight in zip(self.weights, model.weights):
      copy.assign(weight.value)
    self.value.assign(metrics[self.metric])
    self.step.assign(step)
    return True

  @contextlib.contextmanager
  def in_model(self, model):
    """Inside the block the model holds the best weights; its own come back on exit."""
    own = [tf.identity(weight.value) for weight in model.weights]
    for weight, copy in zip(model.weights, self.weights):
      weight.assign(copy.read_value())
    try:
      yield int(self.step.numpy())
    finally:
      for weight, value in zip(model.weights, own):
        weight.assign(value)
