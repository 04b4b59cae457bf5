"""Scoring exports on raw reviews: the held-out reviews a candidate and production are both scored
on, fresh, and what a model sees of new reviews.

Scoring goes through each export's `serving_default` signature on the raw review text, so every
model reads the reviews with the tokenizer and vocabulary it was trained with; their per-review
outcomes then feed the paired tests in `serving.significance`. Only the `label` output is needed
to score, so exports of every readable format version are scored alike.
"""

import dataclasses
import hashlib

import numpy as np
import tensorflow as tf

from trainer.data import survey
from trainer.serving import export
from trainer.serving import review_signals

SCORING_BATCH = review_signals.SCORING_BATCH


@dataclasses.dataclass(frozen=True)
class HeldOutReviews:
  """Raw reviews with their labels and movies, and what identifies them."""
  texts: list  # bytes or str, raw review text.
  labels: np.ndarray  # int, 1 = positive.
  clusters: np.ndarray  # str, each review's movie (`survey.review_group`): its reviews go together.
  fingerprint: str  # sha256 of the names, labels and texts, in name order.
  source: dict  # Where they come from (the corpus' source description) and which split.

  @property
  def examples(self):
    """How many reviews."""
    return len(self.texts)

  def describe(self):
    """The facts a decision record keeps about this data."""
    return {"fingerprint": self.fingerprint, "examples": self.examples,
            "movies": len(set(self.clusters)), **self.source}


def test_split(corpus):
  """The official test split of a `sources.Corpus`, as `HeldOutReviews`."""
  reviews = sorted((r for r in corpus.reviews if r.split == "test"), key=lambda r: r.name)
  digest = hashlib.sha256()
  for review in reviews:
    digest.update(f"{review.name}\t{review.label}\t{len(review.text)}\n".encode())
    digest.update(review.text)
  return HeldOutReviews(texts=[review.text for review in reviews],
                        labels=np.array([review.label for review in reviews], np.int64),
                        clusters=np.array([survey.review_group(review.name, review.movie)
                                           for review in reviews]),
                        fingerprint=digest.hexdigest(),
                        source=dict(corpus.source, split="test"))


def _batches(texts, batch_size):
  """The texts in string tensors of up to `batch_size`."""
  for start in range(0, len(texts), batch_size):
    yield tf.constant(texts[start:start + batch_size], tf.string)


def _load(model_dir):
  """The loaded SavedModel of the export in `model_dir` (UserInputError unless one of ours)."""
  export.load_metadata(model_dir)
  return tf.saved_model.load(model_dir)


def correct_answers(model_dir, reviews, batch_size=SCORING_BATCH):
  """Whether the export in `model_dir` labels each review right (a boolean array).

  Raises:
    UserInputError: unless `model_dir` holds an export of this project.
  """
  serve = _load(model_dir).signatures[export.SIGNATURE]
  labels = [serve(reviews=batch)["label"].numpy() for batch in _batches(reviews.texts, batch_size)]
  predicted = np.concatenate(labels) if labels else np.zeros([0], np.int64)
  return predicted == reviews.labels


def signals(model_dir, texts, batch_size=SCORING_BATCH):
  """What the export in `model_dir` sees of raw reviews: `review_signals.ReviewSignals`.

  The export must have the outputs of format version 2 (token_count, oov_share).
  """
  model = _load(model_dir)
  serve, token_ids = (model.signatures[name] for name in (export.SIGNATURE,
                                                          export.TOKEN_IDS_SIGNATURE))

  def outputs():
    """(numpy outputs, model input) per batch."""
    for batch in _batches(texts, batch_size):
      answer = serve(reviews=batch)
      yield ({name: answer[name].numpy() for name in ("probability", "token_count", "oov_share")},
             token_ids(reviews=batch)["output_0"].numpy())

  return review_signals.collect(outputs())
