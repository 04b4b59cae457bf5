"""Batch helpers of both input modes: a stateless permutation, and gathering a padded batch."""

import tensorflow as tf

from trainer.data import text


def stateless_shuffle(index, max_index, seed):
  """Position of each `index` in a permutation of [0, max_index] fixed by seed int64[3]."""
  return tf.raw_ops.RandomIndexShuffle(index=index, seed=seed, max_index=max_index, rounds=4)


def gather_padded(tokens, labels, batch):
  """Gathers a batch's reviews and right-pads them with `text.PAD_ID` to the longest one.

  Args:
    tokens: RaggedTensor int32[reviews, (time)].
    labels: int32[reviews].
    batch: int[batch], indices of the batch's reviews.

  Returns:
    (int32[batch, time], int32[batch]).
  """
  return tf.gather(tokens, batch).to_tensor(default_value=text.PAD_ID), tf.gather(labels, batch)
