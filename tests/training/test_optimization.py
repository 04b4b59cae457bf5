"""The optimizer: the two private Keras APIs the train step relies on, pinned, and the schedule.

`optimization.TrainerOptimizer` overrides Keras' `_all_reduce_sum_gradients` and
`_update_model_variables_moving_average`, and evaluation reads the EMA weights from
`_model_variables_moving_average`. A Keras upgrade that changes them must fail here, not
silently double the gradient or evaluate the wrong weights.
"""

import keras
import numpy as np
import pytest
import tensorflow as tf

from trainer import config as config_lib
from trainer.training import optimization


def apply_ones_on_every_replica(strategy, optimizer):
  """Applies a gradient of 1 on each replica to a weight of 0; returns the weight after."""
  with strategy.scope():
    weight = tf.Variable([0.0])
    optimizer.build([weight])

  @tf.function
  def step():
    """One update from every replica."""
    strategy.run(lambda: optimizer.apply([tf.ones([1])], [weight]))

  step()
  return float(weight.numpy()[0])


def test_keras_sums_gradients_inside_apply_and_the_override_stops_it(mirrored):
  """On 2 replicas Keras' SGD adds both replicas' gradients; ours applies the one it is given."""
  assert apply_ones_on_every_replica(mirrored, keras.optimizers.SGD(1.0)) == -2.0
  sgd = config_lib.TrainingConfig(optimizer="sgd", learning_rate=1.0, schedule="constant",
                                  warmup_steps=0, clip_norm=0.0, ema_momentum=0.0)
  ours = optimization.build_optimizer(sgd, total_steps=1, precision="float32")
  assert apply_ones_on_every_replica(mirrored, ours) == -1.0


def test_moving_averages_warm_up_where_evaluation_reads_them():
  """The EMA copies step 1's weight, then moves with momentum min(m, (1 + t) / (10 + t))."""
  weight = tf.Variable([1.0])
  sgd = config_lib.TrainingConfig(optimizer="sgd", learning_rate=1.0, schedule="constant",
                                  warmup_steps=0, clip_norm=0.0, ema_momentum=0.5)
  optimizer = optimization.build_optimizer(sgd, total_steps=2, precision="float32")
  optimizer.build([weight])
  averages = optimization.moving_averages(optimizer)
  assert len(averages) == 1 and averages[0].shape == weight.shape
  optimizer.apply([tf.constant([1.0])], [weight])  # weight 0: copied
  np.testing.assert_allclose(averages[0].numpy(), [0.0])
  optimizer.apply([tf.constant([1.0])], [weight])  # weight -1; momentum 2/11
  np.testing.assert_allclose(averages[0].numpy(), [-9 / 11], rtol=1e-6)
  for _ in range(30):  # Later the momentum is capped at ema_momentum.
    previous = averages[0].numpy()
    optimizer.apply([tf.constant([1.0])], [weight])
  np.testing.assert_allclose(averages[0].numpy(), 0.5 * previous + 0.5 * weight.numpy(),
                             rtol=1e-6)
  assert optimization.moving_averages(keras.optimizers.SGD(1.0)) is None


@pytest.mark.parametrize("schedule, expected", [
    ("constant", [1 / 3, 2 / 3, 1.0, 1.0, 1.0]),
    ("cosine", [1 / 3, 2 / 3, 1.0, 0.5, 0.0]),
])
def test_warmup_then_constant_or_cosine(schedule, expected):
  """The first step already learns; the peak comes after the warm-up; cosine ends at 0."""
  training = config_lib.TrainingConfig(learning_rate=1.0, warmup_steps=2, schedule=schedule)
  rate = optimization.build_learning_rate(training, total_steps=4)
  np.testing.assert_allclose([float(rate(step)) for step in range(5)], expected, atol=1e-6)


def test_float16_wraps_the_optimizer_in_loss_scaling():
  """mixed_float16 gets dynamic loss scaling; the learning rate is read through the wrapper."""
  training = config_lib.TrainingConfig(schedule="constant", warmup_steps=0, learning_rate=0.1)
  optimizer = optimization.build_optimizer(training, 10, "mixed_float16")
  assert isinstance(optimizer, keras.optimizers.LossScaleOptimizer)
  assert optimization.current_learning_rate(optimizer) == pytest.approx(0.1)


@pytest.mark.parametrize("precision", ["float32", "mixed_float16"])
def test_clipping_uses_the_norm_of_the_dense_gradient(precision):
  """A token seen 50 times in a batch: its embedding gradient arrives as 50 IndexedSlices rows of
  2 each. Its dense row is 100; Keras' global norm of the slices would say sqrt(50 * 2^2) = 14.1.
  Sparse and dense gradients must be clipped alike, whatever their format."""
  sgd = config_lib.TrainingConfig(optimizer="sgd", learning_rate=1.0, schedule="constant",
                                  warmup_steps=0, clip_norm=10.0, ema_momentum=0.0)
  updates = []
  for sparse in (True, False):
    optimizer = optimization.build_optimizer(sgd, total_steps=1, precision=precision)
    table = tf.Variable(tf.zeros([3, 1]))
    optimizer.build([table])
    gradient = tf.IndexedSlices(tf.fill([50, 1], 2.0), tf.fill([50], 1), tf.constant([3, 1]))
    if not sparse:
      gradient = tf.convert_to_tensor(gradient)
    scale = optimizer.scale_loss(tf.constant(1.0)) if precision == "mixed_float16" else 1.0
    optimizer.apply([_scaled(gradient, scale)], [table])
    updates.append(table.numpy())
  np.testing.assert_allclose(updates[0], updates[1], rtol=1e-6)
  np.testing.assert_allclose(updates[1], [[0.0], [-10.0], [0.0]], rtol=1e-6)


def _scaled(gradient, scale):
  """`gradient` (dense or IndexedSlices) times `scale`, as loss scaling multiplies it."""
  if isinstance(gradient, tf.IndexedSlices):
    return tf.IndexedSlices(gradient.values * scale, gradient.indices, gradient.dense_shape)
  return gradient * scale
