"""The statistics of a prepared split for metadata.json, in mergeable parts (Beam combines them).

Memory is bounded by the distinct review lengths, the movies and a few listed names, never by
the number of reviews: token-length percentiles come from a histogram, computed exactly as
`numpy.percentile` (linear interpolation) computes them from the lengths themselves.
"""

import collections
import math

from trainer.data import sources

LISTED_REVIEWS = 100  # At most this many review names per problem in metadata.json.
_PERCENTILES = (50, 90, 95, 99)


class SplitStatistics:
  """Counts of one split's reviews: labels, movies, lengths, unknown words, problems."""

  def __init__(self):
    """Starts with no reviews."""
    self.labels = [0] * len(sources.LABELS)  # Of the kept (non-empty) reviews.
    self.movies = set()
    self.lengths = collections.Counter()  # Token count -> kept reviews of that many tokens.
    self.oov_tokens = 0
    self.tokens = 0
    self.empty = Listed()
    self.invalid_utf8 = Listed()

  def add(self, name, label, movie, valid_utf8, length, oov_tokens):
    """Adds one review with its token count and how many of its tokens are out of vocabulary."""
    if movie:
      self.movies.add(movie)
    if not valid_utf8:
      self.invalid_utf8.add(name)
    if not length:
      self.empty.add(name)
      return
    self.labels[label] += 1
    self.lengths[length] += 1
    self.oov_tokens += oov_tokens
    self.tokens += length

  def merge(self, other):
    """Adds the reviews counted by `other`; returns self."""
    self.labels = [a + b for a, b in zip(self.labels, other.labels)]
    self.movies |= other.movies
    self.lengths.update(other.lengths)
    self.oov_tokens += other.oov_tokens
    self.tokens += other.tokens
    self.empty.merge(other.empty)
    self.invalid_utf8.merge(other.invalid_utf8)
    return self

  @property
  def examples(self):
    """Reviews kept (with at least one token)."""
    return sum(self.labels)

  def to_metadata(self):
    """The split's entry of metadata.json (without its shards)."""
    return {
        "examples": self.examples,
        "labels": dict(zip(sources.LABELS, self.labels)),
        "movies": len(self.movies) or None,
        "token_length": _length_statistics(self.lengths),
        "oov_rate": round(self.oov_tokens / self.tokens, 5) if self.tokens else 0.0,
        "dropped_empty": self.empty.to_metadata(),
        "invalid_utf8": self.invalid_utf8.to_metadata(),
    }


class Listed:
  """A count of reviews with a problem and the first `LISTED_REVIEWS` of their names, sorted."""

  def __init__(self):
    """Starts with none."""
    self.count = 0
    self.names = []

  def add(self, name):
    """Counts one more review."""
    self.count += 1
    self.names = sorted(self.names + [name])[:LISTED_REVIEWS]

  def merge(self, other):
    """Adds the reviews of `other`."""
    self.count += other.count
    self.names = sorted(self.names + other.names)[:LISTED_REVIEWS]

  def to_metadata(self):
    """{"count": ..., "reviews": [names]}."""
    return {"count": self.count, "reviews": self.names}


def split_summaries(metadata):
  """Per split of a prepared dataset's metadata: its reviews and their share of positive ones.

  Each export keeps those of its training data: the data gate of the next retraining compares
  against them.
  """
  return {split: {"examples": stats["examples"],
                  "positive_share": stats["labels"]["pos"] / stats["examples"]
                                    if stats["examples"] else 0.0}
          for split, stats in metadata["splits"].items()}


def is_valid_utf8(data):
  """Whether bytes decode as UTF-8."""
  try:
    data.decode("utf-8")
    return True
  except UnicodeDecodeError:
    return False


def _length_statistics(histogram):
  """Mean, percentiles and max of token counts, from length -> count."""
  count = sum(histogram.values())
  if not count:
    return {}
  mean = sum(length * n for length, n in histogram.items()) / count
  stats = {"mean": round(mean, 2), "max": max(histogram)}
  stats.update({f"p{p}": histogram_percentile(histogram, p) for p in _PERCENTILES})
  return stats


def histogram_percentile(histogram, percentile):
  """`numpy.percentile(lengths, percentile)` of the lengths that `histogram` counts."""
  index = percentile / 100 * (sum(histogram.values()) - 1)
  below = math.floor(index)
  low, high = _sorted_value(histogram, below), _sorted_value(histogram, below + 1)
  gamma = index - below
  # numpy's lerp: from the nearer end, so that gamma 1 gives exactly `high`.
  return float(high - (high - low) * (1 - gamma) if gamma >= 0.5 else low + (high - low) * gamma)


def _sorted_value(histogram, position):
  """The value at `position` of the sorted values (the last one past the end)."""
  seen = 0
  for value in sorted(histogram):
    seen += histogram[value]
    if position < seen:
      return value
  return max(histogram)
