"""What one pass over a corpus tells before it is prepared: its checksum and its movies' sizes.

The checksum is of the reviews themselves, whatever their container and order: the sum of each
review's own sha256 (of its name, label, rating and text) and the sum of the sha256 of each
review's (name, movie) (multiset hashes), hashed with their number. The movies are summed apart
so that a reader may add them after the texts: the aclImdb tarball's urls files, which name the
movies, come after its reviews, so its reader surveys while it checks the layout, in one pass.
"""

import collections
import dataclasses
import hashlib

_MODULUS = 2 ** 256


@dataclasses.dataclass(frozen=True)
class Survey:
  """What one pass over a corpus tells before preparing it."""
  content_sha256: str
  train_group_sizes: dict  # Official train reviews per group (`review_group`).
  test_reviews: int


def review_group(name, movie):
  """The group a review moves to validation with: its movie, or the review alone."""
  return movie or f"review:{name}"


class Surveyor:
  """Builds a `Survey` from reviews whose movies may be added after their texts."""

  def __init__(self):
    """Nothing surveyed yet."""
    self._reviews = 0
    self._content_sum = 0
    self._movie_sum = 0
    self._test_reviews = 0
    self._train_group_sizes = collections.Counter()

  def add_content(self, review):
    """Adds a review (a `sources.Review`) but its movie (`add_movie`)."""
    header = f"{review.name}\t{review.label}\t{review.rating}\t{len(review.text)}\n"
    self._reviews += 1
    self._content_sum = (self._content_sum + _digest(header.encode("utf-8") + review.text)
                         ) % _MODULUS

  def add_movie(self, split, name, movie):
    """Adds the movie of review `name` of the official `split` (None when unknown)."""
    self._movie_sum = (self._movie_sum + _digest(f"{name}\t{movie or ''}".encode("utf-8"))
                       ) % _MODULUS
    if split == "test":
      self._test_reviews += 1
    else:
      self._train_group_sizes[review_group(name, movie)] += 1

  def survey(self):
    """The `Survey` of the reviews added."""
    checksum = hashlib.sha256(
        f"{self._reviews}:{self._content_sum:064x}:{self._movie_sum:064x}".encode()).hexdigest()
    return Survey(checksum, dict(self._train_group_sizes), self._test_reviews)


def _digest(data):
  """The sha256 of `data` as an integer."""
  return int.from_bytes(hashlib.sha256(data).digest(), "big")


def survey(reviews):
  """Reads the reviews once and returns their `Survey`."""
  surveyor = Surveyor()
  for review in reviews:
    surveyor.add_content(review)
    surveyor.add_movie(review.split, review.name, review.movie)
  return surveyor.survey()


def survey_corpus(corpus):
  """The survey of a `sources.Corpus`: the one its reader made while reading, or a pass now."""
  return corpus.survey or survey(corpus.reviews)
