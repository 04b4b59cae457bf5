"""The TFRecord format of a prepared review: a `tf.train.Example` written and parsed here only."""

import tensorflow as tf

_TOKENS = "tokens"
_LABEL = "label"
_RATING = "rating"
_NAME = "name"

_PARSE_SPEC = {
    _TOKENS: tf.io.RaggedFeature(tf.int64, row_splits_dtype=tf.int64),
    _LABEL: tf.io.FixedLenFeature([], tf.int64),
}


def serialize(token_ids, label, rating, name):
  """Encodes one review.

  Args:
    token_ids: ids from the vocabulary (a list of int is fastest).
    label: 0 (negative) or 1 (positive).
    rating: star rating 1-10, or 0 when unknown.
    name: where the review came from, kept for debugging.

  Returns:
    The serialized `tf.train.Example` (bytes), the same in every process (the map of
    features is written in key order; by default its order varies between processes).
  """
  example = tf.train.Example()
  feature = example.features.feature
  feature[_TOKENS].int64_list.value.extend(token_ids)
  feature[_LABEL].int64_list.value.append(label)
  feature[_RATING].int64_list.value.append(rating)
  feature[_NAME].bytes_list.value.append(name.encode("utf-8"))
  return example.SerializeToString(deterministic=True)  # Features in key order.


def parse(serialized):
  """Decodes a batch of serialized reviews.

  Args:
    serialized: string[batch].

  Returns:
    (tokens, labels): RaggedTensor int32[batch, (tokens)] and int32[batch].
  """
  features = tf.io.parse_example(serialized, _PARSE_SPEC)
  return tf.cast(features[_TOKENS], tf.int32), tf.cast(features[_LABEL], tf.int32)


def parse_names(serialized):
  """The source names (e.g. "test/pos/10814_9.txt") of a batch of serialized reviews."""
  return tf.io.parse_example(serialized, {_NAME: tf.io.FixedLenFeature([], tf.string)})[_NAME]

