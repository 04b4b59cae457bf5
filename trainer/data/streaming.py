"""The streaming input mode: a worker's shards read as a stream, bucketed in bounded windows.

What it yields, and what exact resume means here: `input_pipeline`'s module docstring. The
stream is handled in whole tensors only, never review by review: chunks of serialized reviews
(`input_pipeline._serialized_chunks`) are regrouped into shuffle blocks, shuffled, regrouped into
windows, and each window is parsed whole, several windows in parallel. Memory holds one shuffle
block of serialized reviews and the few windows in flight. Prepare writes no empty review, and
a window that holds one is an error (it would break the step alignment that resume relies on).
"""

import tensorflow as tf

from trainer.data import batching

SHUFFLE_BLOCK = 16384  # Serialized reviews shuffled together.


def make_batches(chunks, parse, batch_size, *, training, replicas, seed, start_step,
                 sort_window_batches, shuffle_block=SHUFFLE_BLOCK):
  """The batches of one input pipeline that streams its files.

  Args:
    chunks: `chunks(file_order_seed=None)` -> dataset of string[n], consecutive serialized
      reviews (`input_pipeline._serialized_chunks`).
    parse: string[n] -> (RaggedTensor int32[n, (time)], int32[n]), dropping empty reviews.
    batch_size: reviews per replica.
    training: the endless training stream (True), or each review once (False).
    replicas: replicas fed by this pipeline; each step takes `replicas` consecutive batches.
    seed, start_step, sort_window_batches: as in `input_pipeline.make_dataset`.
    shuffle_block: serialized reviews shuffled together.

  Returns:
    A dataset of (tokens int32[batch, time], labels int32[batch]).
  """
  if not training:
    return _evaluation_batches(chunks(), parse, batch_size, sort_window_batches)
  step_size = batch_size * replicas
  window_size = sort_window_batches * step_size
  seed = tf.constant(seed, tf.int64)

  def stream(_):
    """The endless stream from `start_step` on, once this pipeline's reviews are counted."""
    num_reviews = chunks().reduce(
        tf.constant(0, tf.int64), lambda count, chunk: count + tf.size(chunk, tf.int64))
    steps_per_epoch = (num_reviews // window_size * sort_window_batches
                       + num_reviews % window_size // step_size)
    with tf.control_dependencies([tf.debugging.assert_positive(
        steps_per_epoch, message="Streaming needs at least one step of reviews per input "
        "pipeline; this one has fewer: use --input_cache=memory.")]):
      steps_per_epoch = tf.identity(steps_per_epoch)  # Checked before any use.
    used_per_epoch = steps_per_epoch * step_size
    start_epoch = start_step // steps_per_epoch
    step_in_epoch = start_step % steps_per_epoch
    first_window = step_in_epoch // sort_window_batches

    def window_in_order(epoch, index, window):
      """Window `index` of `epoch` cut to its whole steps, parsed, in the order of its batches."""
      tokens, labels = _parse_whole(window[:used_per_epoch - index * window_size], parse)
      return batching.in_order(tokens, labels, batching.bucketed_order(
          tokens.row_lengths(), step_size, tf.stack([seed, epoch, index])))

    def epoch_batches(epoch):
      """The batches of one epoch (from `first_window` on in the first one)."""
      blocks = chunks(tf.stack([seed, epoch, -1])).rebatch(shuffle_block).enumerate().map(
          lambda index, block: _shuffled_block(block, tf.stack([seed, epoch, index])))
      windows = (blocks.rebatch(window_size)
                 .take((steps_per_epoch + sort_window_batches - 1) // sort_window_batches)
                 .enumerate()
                 .skip(tf.where(epoch == start_epoch, first_window, 0))
                 .map(lambda index, window: window_in_order(epoch, index, window),
                      num_parallel_calls=tf.data.AUTOTUNE, deterministic=True))
      return windows.flat_map(lambda *window: batching.padded_batches(*window, batch_size))

    return (tf.data.Dataset.range(start_epoch, tf.int64.max).flat_map(epoch_batches)
            .skip(step_in_epoch % sort_window_batches * replicas))

  return tf.data.Dataset.from_tensors(0).flat_map(stream)


def _shuffled_block(block, seed):
  """The reviews of `block` (string[n]) in the order of a permutation fixed by seed int64[3]."""
  size = tf.size(block, tf.int64)
  return tf.gather(block, batching.stateless_shuffle(tf.range(size), size - 1, seed))


def _parse_whole(serialized, parse):
  """Parses a window of serialized reviews; none may be empty."""
  tokens, labels = parse(serialized)
  with tf.control_dependencies([tf.debugging.assert_equal(
      tf.size(labels), tf.size(serialized), message="A shard holds an empty review, which "
      "streaming cannot skip; prepare the dataset again (prepare drops empty reviews), or use "
      "--input_cache=memory.")]):
    return tf.identity(tokens), tf.identity(labels)


def _evaluation_batches(chunks, parse, batch_size, sort_window_batches):
  """Each review once, in file order, each window of batches sorted by length."""
  def window_in_order(window):
    """A window parsed, shortest reviews first."""
    tokens, labels = parse(window)
    return batching.in_order(tokens, labels, tf.argsort(tokens.row_lengths(), stable=True))

  return (chunks.rebatch(batch_size * sort_window_batches)
          .map(window_in_order, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
          .flat_map(lambda *window: batching.padded_batches(*window, batch_size)))
