"""The streaming input mode: a worker's shards read as a stream, bucketed in bounded windows.

What it yields, and what exact resume means here: `input_pipeline`'s module docstring. Memory
holds one shuffle buffer of serialized reviews and one window of parsed ones. Windows are cut
from the serialized reviews and parsed whole; prepare writes no empty review, and a window
that holds one is an error (it would break the step alignment that resume relies on).
"""

import tensorflow as tf

from trainer.data import batching

_COUNT_CHUNK = 4096  # Serialized reviews counted per op.


def make_batches(serialized, parse, batch_size, *, training, replicas, seed, start_step,
                 sort_window_batches):
  """The batches of one input pipeline that streams its files.

  Args:
    serialized: `serialized(file_order_seed=None, shuffle_seed=None)` -> dataset of serialized
      reviews (`input_pipeline._serialized_reviews`).
    parse: string[n] -> (RaggedTensor int32[n, (time)], int32[n]), dropping empty reviews.
    batch_size: reviews per replica.
    training: the endless training stream (True), or each review once (False).
    replicas: replicas fed by this pipeline; each step takes `replicas` consecutive batches.
    seed, start_step, sort_window_batches: as in `input_pipeline.make_dataset`.

  Returns:
    A dataset of (tokens int32[batch, time], labels int32[batch]).
  """
  if not training:
    return _evaluation_batches(serialized(), parse, batch_size, sort_window_batches)
  step_size = batch_size * replicas
  window_size = sort_window_batches * step_size
  seed = tf.constant(seed, tf.int64)

  def stream(_):
    """The endless stream from `start_step` on, once this pipeline's reviews are counted."""
    num_reviews = serialized().batch(_COUNT_CHUNK).reduce(
        tf.constant(0, tf.int64), lambda count, chunk: count + tf.size(chunk, tf.int64))
    steps_per_epoch = (num_reviews // window_size * sort_window_batches
                       + num_reviews % window_size // step_size)
    with tf.control_dependencies([tf.debugging.assert_positive(
        steps_per_epoch, message="Streaming needs at least one step of reviews per input "
        "pipeline; this one has fewer: use --input_cache=memory.")]):
      steps_per_epoch = tf.identity(steps_per_epoch)  # Checked before any use.
    start_epoch = start_step // steps_per_epoch
    step_in_epoch = start_step % steps_per_epoch
    first_window = step_in_epoch // sort_window_batches

    def epoch_batches(epoch):
      """The batches of one epoch (from `first_window` on in the first one)."""
      skipped = tf.where(epoch == start_epoch, first_window, 0)
      reviews = serialized(tf.stack([seed, epoch, -1]), tf.stack([seed, epoch]))
      windows = (reviews.take(steps_per_epoch * step_size).skip(skipped * window_size)
                 .batch(window_size)
                 .map(lambda window: _parse_whole(window, parse),
                      num_parallel_calls=tf.data.AUTOTUNE, deterministic=True))
      return windows.enumerate(start=skipped).flat_map(
          lambda index, window: _window_batches(window, tf.stack([seed, epoch, index]),
                                                step_size, replicas))

    return (tf.data.Dataset.range(start_epoch, tf.int64.max).flat_map(epoch_batches)
            .skip(step_in_epoch % sort_window_batches * replicas))

  return tf.data.Dataset.from_tensors(0).flat_map(stream)


def _parse_whole(serialized, parse):
  """Parses a window of serialized reviews; none may be empty."""
  tokens, labels = parse(serialized)
  with tf.control_dependencies([tf.debugging.assert_equal(
      tf.size(labels), tf.size(serialized), message="A shard holds an empty review, which "
      "streaming cannot skip; prepare the dataset again (prepare drops empty reviews), or use "
      "--input_cache=memory.")]):
    return tf.identity(tokens), tf.identity(labels)


def _window_batches(window, order_seed, step_size, replicas):
  """A window's reviews sorted by length, cut into steps, in a seeded order of steps.

  Args:
    window: (RaggedTensor int32[reviews, (time)], int32[reviews]), a whole number of steps.
    order_seed: int64[3], fixes the order of the steps.

  Returns:
    A dataset of padded per-replica batches, `replicas` consecutive ones per step.
  """
  tokens, labels = window
  order = tf.argsort(tokens.row_lengths(), stable=True)
  steps = tf.size(labels, tf.int64) // step_size
  step_order = batching.stateless_shuffle(tf.range(steps), steps - 1, order_seed)
  batches = tf.reshape(tf.gather(tf.reshape(order, [steps, step_size]), step_order),
                       [steps * replicas, step_size // replicas])
  return tf.data.Dataset.from_tensor_slices(batches).map(
      lambda batch: batching.gather_padded(tokens, labels, batch),
      num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)


def _evaluation_batches(serialized, parse, batch_size, sort_window_batches):
  """Each review once, in file order, each window of batches sorted by length."""
  def window_batches(tokens, labels):
    """A window's batches, shortest reviews first; the last one may be smaller."""
    order = tf.argsort(tokens.row_lengths(), stable=True)
    return tf.data.Dataset.from_tensor_slices(order).batch(batch_size).map(
        lambda batch: batching.gather_padded(tokens, labels, batch),
        num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)

  return (serialized.batch(batch_size * sort_window_batches)
          .map(parse, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
          .flat_map(window_batches))
