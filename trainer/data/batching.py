"""Batch helpers of both input modes: a stateless permutation, truncation, padded batches.

Both modes work on windows of reviews: a window's reviews are gathered once in the order of its
batches (one ragged gather per window, done for several windows in parallel), so that each batch
is a contiguous slice of rows, padded with one op.
"""

import tensorflow as tf

from trainer.data import text


def stateless_shuffle(index, max_index, seed):
  """Position of each `index` in a permutation of [0, max_index] fixed by seed int64[3]."""
  return tf.raw_ops.RandomIndexShuffle(index=index, seed=seed, max_index=max_index, rounds=4)


def bucketed_order(lengths, step_size, seed):
  """Reviews sorted by length, cut into steps of `step_size`, the steps in an order fixed by seed.

  Args:
    lengths: int64[reviews], a whole number of steps.
    step_size: reviews per step.
    seed: int64[3], fixes the order of the steps.

  Returns:
    int64[reviews], indices into `lengths`: the reviews of each step, one step after the other.
  """
  steps = tf.size(lengths, tf.int64) // step_size
  by_length = tf.reshape(tf.argsort(lengths, stable=True), [steps, step_size])
  return tf.reshape(tf.gather(by_length, stateless_shuffle(tf.range(steps), steps - 1, seed)),
                    [-1])


def truncated_rows(tokens, rows, max_length, keep):
  """Rows `rows` of `tokens`, each cut to its `max_length` tokens at the `keep` end, in one gather.

  Each row is split at its cut into two pieces (either may be empty), and the kept pieces are
  gathered: no other pass over the tokens.

  Args:
    tokens: RaggedTensor [reviews, (time)].
    rows: int64[n], the rows to gather.
    max_length: most tokens kept per row.
    keep: "last" or "first".

  Returns:
    RaggedTensor [n, (at most max_length)], of the dtype of `tokens`.
  """
  starts, limits = tokens.row_starts(), tokens.row_limits()
  kept = tf.minimum(limits - starts, max_length)
  cuts = limits - kept if keep == "last" else starts + kept
  pieces = tf.RaggedTensor.from_row_splits(
      tokens.flat_values,
      tf.concat([tf.reshape(tf.stack([starts, cuts], axis=1), [-1]), tokens.row_splits[-1:]], 0),
      validate=False)
  return tf.gather(pieces, 2 * rows + (1 if keep == "last" else 0))


def in_order(tokens, labels, order):
  """The reviews `order` (int64[n]) of a window, in that order: (tokens, labels)."""
  return tf.gather(tokens, order), tf.gather(labels, order)


def padded_batches(tokens, labels, batch_size):
  """Consecutive rows cut into batches, each right-padded with `text.PAD_ID` to its longest row.

  Args:
    tokens: RaggedTensor int32[reviews, (time)], the rows in the order of the batches.
    labels: int32[reviews].
    batch_size: rows per batch; the last batch holds the rest.

  Returns:
    A dataset of (int32[batch, time], int32[batch]).
  """
  size = tf.size(labels, tf.int64)

  def batch(index):
    """Batch `index`: rows [index * batch_size, (index + 1) * batch_size)."""
    start = index * batch_size
    end = tf.minimum(start + batch_size, size)
    return tokens[start:end].to_tensor(default_value=text.PAD_ID), labels[start:end]

  return tf.data.Dataset.range((size + batch_size - 1) // batch_size).map(batch)
