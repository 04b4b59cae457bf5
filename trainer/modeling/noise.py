"""Dropout whose noise depends only on (seed, step, an example's place in the global batch).

Keras' Dropout draws from a seed generator whose state is a mirrored variable that every replica
advances identically, so under a tf.distribute strategy all replicas draw the same mask. The
train step instead runs the model inside `example_noise(...)`: there the model's
`ExampleDropout` layers draw the noise of the whole global batch from a stateless generator
keyed by (seed, step, layer) and keep the rows of this replica's examples. The noise an example
gets is then the same whether the global batch runs on one device, on 8 replicas or on 8
workers, and every run with the same seed draws it again. Outside the block (e.g. Keras `fit`)
the layers fall back to Keras' own dropout.
"""

import contextlib
import dataclasses
import threading

import keras
from keras import layers
import tensorflow as tf

from trainer import config as config_lib

_LAYER_SALT = 1_000_003  # Separates the streams of layers that share a seed.
_local = threading.local()  # MirroredStrategy traces each replica in a thread of its own.


@dataclasses.dataclass(frozen=True)
class ExampleNoise:
  """Where a replica's examples sit in the global batch, and the step that keys the noise."""
  step: tf.Tensor  # int64 scalar.
  first_example: tf.Tensor  # int32 scalar: the global row of this replica's first example.
  global_batch_size: int


@contextlib.contextmanager
def example_noise(step, global_batch_size):
  """Inside the block (in a replica's step), ExampleDropout layers draw per-example noise.

  Args:
    step: int64 scalar, the training step (noise differs between steps).
    global_batch_size: examples per step over all replicas; the replicas' batches are
      consecutive slices of it, in replica order (as the input pipeline deals them).
  """
  context = tf.distribute.get_replica_context()
  replica = tf.cast(context.replica_id_in_sync_group, tf.int32)
  per_replica = config_lib.per_replica_batch_size(global_batch_size,
                                                  context.num_replicas_in_sync)
  previous = getattr(_local, "noise", None)
  _local.noise = ExampleNoise(tf.cast(step, tf.int64), replica * per_replica, global_batch_size)
  try:
    yield
  finally:
    _local.noise = previous


class ExampleDropout(layers.Layer):
  """Dropout of whole channels, words or units, with per-example noise (see the module doc).

  Args:
    rate: share of what is dropped.
    axis: "channel" drops embedding channels of a [batch, time, channels] input for every word
      (SpatialDropout1D); "word" drops whole words (every channel of a time step); "unit"
      drops units of a [batch, units] input (Dropout).
    seed: seeds the noise; layers of one model need different seeds.
    max_length: for "word": the longest review, so that word t's noise is the same whatever
      the padded length of its batch.
  """

  def __init__(self, rate, axis, seed, max_length=None, **kwargs):
    """A layer dropping `rate` of its `axis`."""
    super().__init__(**kwargs)
    self.rate, self.axis, self.seed, self.max_length = rate, axis, seed, max_length
    self.supports_masking = True
    self.seed_generator = keras.random.SeedGenerator(seed)  # For use outside `example_noise`.

  def _noise_shape(self, inputs):
    """The shape of the mask Keras' dropout broadcasts over `inputs`."""
    shape = tf.shape(inputs)
    if self.axis == "channel":
      return (shape[0], 1, shape[2])
    if self.axis == "word":
      return (shape[0], shape[1], 1)
    return None

  def call(self, inputs, training=False):
    """inputs: float[batch, time, channels] or [batch, units] -> the same, with dropout."""
    if not training or not self.rate:
      return inputs
    noise = getattr(_local, "noise", None)
    if noise is None:
      return keras.random.dropout(inputs, self.rate, noise_shape=self._noise_shape(inputs),
                                  seed=self.seed_generator)
    seed = tf.stack([tf.constant(self.seed * _LAYER_SALT, tf.int64), noise.step])
    width = self.max_length if self.axis == "word" else inputs.shape[-1]
    uniform = tf.random.stateless_uniform([noise.global_batch_size, width], seed)
    batch = tf.shape(inputs)[0]
    uniform = uniform[noise.first_example:noise.first_example + batch]
    if self.axis == "word":
      uniform = uniform[:, :tf.shape(inputs)[1], tf.newaxis]
    elif self.axis == "channel":
      uniform = uniform[:, tf.newaxis, :]
    keep = tf.cast(uniform >= self.rate, inputs.dtype)
    return inputs * keep / tf.cast(1 - self.rate, inputs.dtype)

  def get_config(self):
    """Keras serialization."""
    return {**super().get_config(), "rate": self.rate, "axis": self.axis, "seed": self.seed,
            "max_length": self.max_length}
