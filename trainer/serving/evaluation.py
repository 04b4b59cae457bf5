"""The held-out reviews that a candidate and the production model are both scored on, fresh.

Scoring goes through each export's `serving_default` signature on the raw review text, so every
model reads the reviews with the tokenizer and vocabulary it was trained with; their per-review
outcomes then feed the paired test in `serving.significance`.
"""

import dataclasses
import hashlib

import numpy as np
import tensorflow as tf

from trainer.serving import export

SCORING_BATCH = 256


@dataclasses.dataclass(frozen=True)
class HeldOutReviews:
  """Raw reviews with their labels, and what identifies them."""
  texts: list  # bytes or str, raw review text.
  labels: np.ndarray  # int, 1 = positive.
  fingerprint: str  # sha256 of the names, labels and texts, in name order.
  source: dict  # Where they come from (the corpus' source description) and which split.

  @property
  def examples(self):
    """How many reviews."""
    return len(self.texts)

  def describe(self):
    """The facts a decision record keeps about this data."""
    return {"fingerprint": self.fingerprint, "examples": self.examples, **self.source}


def test_split(corpus):
  """The official test split of a `sources.Corpus`, as `HeldOutReviews`."""
  reviews = sorted((r for r in corpus.reviews if r.split == "test"), key=lambda r: r.name)
  digest = hashlib.sha256()
  for review in reviews:
    digest.update(f"{review.name}\t{review.label}\t{len(review.text)}\n".encode())
    digest.update(review.text)
  return HeldOutReviews(texts=[review.text for review in reviews],
                        labels=np.array([review.label for review in reviews], np.int64),
                        fingerprint=digest.hexdigest(),
                        source=dict(corpus.source, split="test"))


def correct_answers(model_dir, reviews, batch_size=SCORING_BATCH):
  """Whether the export in `model_dir` labels each review right (a boolean array).

  Raises:
    UserInputError: unless `model_dir` holds an export of this project.
  """
  export.load_metadata(model_dir)
  serve = tf.saved_model.load(model_dir).signatures[export.SIGNATURE]
  labels = []
  for start in range(0, reviews.examples, batch_size):
    batch = tf.constant(reviews.texts[start:start + batch_size], tf.string)
    labels.append(serve(reviews=batch)["label"].numpy())
  predicted = np.concatenate(labels) if labels else np.zeros([0], np.int64)
  return predicted == reviews.labels
