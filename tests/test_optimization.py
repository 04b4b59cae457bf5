"""The optimizer: the two private Keras APIs the train step relies on, pinned, and the schedule.

`optimization.AppliesGradientsAsGiven` overrides Keras' `_all_reduce_sum_gradients`, and
evaluation reads the EMA weights from `_model_variables_moving_average`. A Keras upgrade that
changes either must fail here, not silently double the gradient or evaluate the wrong weights.
"""

import keras
import numpy as np
import pytest
import tensorflow as tf

from trainer import config as config_lib
from trainer.training import optimization


class _SGD(optimization.AppliesGradientsAsGiven, keras.optimizers.SGD):
  """Plain SGD, where a gradient twice as large moves the weight twice as far."""


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
  assert apply_ones_on_every_replica(mirrored, _SGD(1.0, name="sgd_as_given")) == -1.0


def test_moving_averages_are_where_evaluation_reads_them():
  """The EMA variables follow Keras' rule: the weight after step 1, then momentum averaging."""
  weight = tf.Variable([1.0])
  optimizer = keras.optimizers.SGD(1.0, use_ema=True, ema_momentum=0.5)
  optimizer.build([weight])
  averages = optimization.moving_averages(optimizer)
  assert len(averages) == 1 and averages[0].shape == weight.shape
  optimizer.apply([tf.constant([1.0])], [weight])  # weight 0, average 0 (the first step)
  optimizer.apply([tf.constant([1.0])], [weight])  # weight -1, average 0.5 * 0 + 0.5 * -1
  np.testing.assert_allclose(averages[0].numpy(), [-0.5])
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
