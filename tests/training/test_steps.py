"""The train step on its own: every weight learns, the gradient scale, per-example dropout noise."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from trainer import config as config_lib
from trainer.data import input_pipeline
from trainer.data import prepared_dataset
from trainer.modeling import noise
from trainer.training import optimization
from trainer.training import steps as steps_lib

# The default preset's dropout, on a model small enough for a test.
CONFIG = config_lib.override(
    config_lib.get_preset("local"), vocab_size=40, global_batch_size=8, max_length=40,
    **{name: getattr(config_lib.Config().model, name)
       for name in ("embedding_dropout", "word_dropout", "dropout")}, sort_window_batches=2)


@pytest.fixture(autouse=True)
def float32_policy():
  """Restores the float32 policy that a mixed-precision step changes."""
  yield
  keras.mixed_precision.set_global_policy("float32")


def one_step(strategy, config, learnable_dir, precision="float32"):
  """Builds the model (seed 0) and runs one train step on the first batch.

  Returns:
    (weights before, weights after), lists of numpy arrays in model order.
  """
  keras.utils.set_random_seed(0)
  model, optimizer = optimization.build_model_and_optimizer(strategy, config, 10, precision)
  files = prepared_dataset.split_files(learnable_dir, "train")
  per_replica = config.training.global_batch_size // strategy.num_replicas_in_sync
  data = strategy.distribute_datasets_from_function(lambda context: input_pipeline.make_dataset(
      files, per_replica, config.input, training=True, input_context=context))
  step = steps_lib.build_train_step(strategy, model, optimizer, config.training,
                                    data.element_spec)
  before = [weight.numpy().copy() for weight in model.trainable_variables]
  loss_sum, _ = step(next(iter(data)), 1)
  assert np.isfinite(loss_sum.numpy())
  return before, [weight.numpy() for weight in model.trainable_variables]


@pytest.mark.slow
def test_one_step_changes_every_trainable_weight(learnable_dir):
  """A single real step moves every trainable variable."""
  before, after = one_step(tf.distribute.get_strategy(), CONFIG, learnable_dir)
  for index, (old, new) in enumerate(zip(before, after)):
    assert np.any(new != old), f"weight {index}"


SGD = config_lib.override(CONFIG, optimizer="sgd", learning_rate=0.5, schedule="constant",
                          warmup_steps=0, clip_norm=0.0, ema_momentum=0.0)


@pytest.mark.slow
@pytest.mark.parametrize("precision", ["float32", "mixed_float16"])
def test_gradient_scale_is_the_same_on_one_device_and_two_replicas(learnable_dir, mirrored,
                                                                    precision):
  """With plain SGD (a 2x gradient moves the weights 2x) one step on 2 replicas moves every
  weight as one step on one device: no double or missing cross-replica sum, no loss scale left
  in the gradient.

  float32: every element within 1e-4 of the weight's largest move. float16 rounds the forward
  pass of each half batch apart, which can flip the sign of a single tiny element's move (the
  GRU's gates), so there the whole move of each weight must agree within 5% (norm of the
  difference over norm of the move); a missing or double sum, or a loss scale, is off by 50% or
  more."""
  before, one_device = one_step(tf.distribute.get_strategy(), SGD, learnable_dir)
  _, two_replicas = one_step(mirrored, SGD, learnable_dir, precision)
  for index, (start, want, got) in enumerate(zip(before, one_device, two_replicas)):
    moved = np.abs(want - start).max()
    assert moved > 0, f"weight {index} did not move"
    if precision == "float32":
      np.testing.assert_allclose(got - start, want - start, atol=1e-4 * moved,
                                 err_msg=f"weight {index}")
    else:
      off = np.linalg.norm(got - want) / np.linalg.norm(want - start)
      assert off < 0.05, f"weight {index}: the move differs by {off:.1%}"


def masks(strategy, inputs, layer, step):
  """The dropout masks `layer` draws for `inputs` (the global batch) inside the train step.

  Returns:
    float32 numpy array of the masks of all replicas, in global batch order.
  """
  global_batch = inputs.shape[0]
  per_replica = global_batch // strategy.num_replicas_in_sync

  def replica_masks():
    """This replica's rows of the global batch, through the layer."""
    context = tf.distribute.get_replica_context()
    first = tf.cast(context.replica_id_in_sync_group, tf.int32) * per_replica
    rows = inputs[first:first + per_replica] if strategy.num_replicas_in_sync > 1 else inputs
    with noise.example_noise(tf.constant(step, tf.int64), global_batch):
      return layer(rows, training=True)

  outputs = strategy.run(tf.function(replica_masks))
  return np.concatenate([value.numpy() for value in strategy.experimental_local_results(outputs)])


@pytest.mark.parametrize("axis, shape", [("channel", (8, 5, 6)), ("word", (8, 5, 6)),
                                         ("unit", (8, 6))])
def test_dropout_noise_depends_on_the_example_not_on_the_replica(mirrored, axis, shape):
  """Replicas draw different masks, and each example gets the noise it gets on one device."""
  layer = noise.ExampleDropout(0.5, axis, seed=3, max_length=5)
  inputs = tf.ones(shape)
  on_one_device = masks(tf.distribute.get_strategy(), inputs, layer, step=7)
  on_two_replicas = masks(mirrored, inputs, layer, step=7)
  np.testing.assert_array_equal(on_two_replicas, on_one_device)
  assert not np.array_equal(on_two_replicas[:4], on_two_replicas[4:])  # Replicas differ.
  assert not np.array_equal(masks(mirrored, inputs, layer, step=8), on_two_replicas)
  assert set(np.unique(on_one_device)) == {0.0, 2.0}  # Dropped, or kept and scaled by 1/0.5.
