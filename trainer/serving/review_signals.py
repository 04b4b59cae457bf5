"""What a model sees of reviews: each one's score, length and unknown words, and the ids it reads;
their summaries, and the distance between two summaries.

The serving signature returns per review its `probability`, `token_count` and `oov_share`, and
the `token_ids` signature the ids the model reads (`serving.export`); `collect` gathers them over
batches into `ReviewSignals`. `aggregate` counts them into histograms (weighted, for resamples):
an export keeps that of its own validation reviews (`drift_baseline` in export_metadata.json,
from `baseline`), and retraining's data gate compares production's view of new reviews with it
(`retraining.data_gate`), by `js_distance` and the unknown-token rate.
"""

import dataclasses

import numpy as np
import tensorflow as tf

from trainer.data import prepared_dataset
from trainer.data import records

SCORE_BINS = 10  # Equal-width bins of the probability.
# Token counts in half-octave bins (each about 41% wider than the last): bin 0 is an empty review.
LENGTH_EDGES = np.unique(np.round(2 ** (np.arange(0, 2 * 15 + 1) / 2))).astype(np.int64)
SCORING_BATCH = 256


@dataclasses.dataclass(frozen=True)
class ReviewSignals:
  """What a model saw of each of a set of reviews."""
  probability: np.ndarray  # float[reviews], of a positive review.
  token_count: np.ndarray  # int64[reviews], the whole review's tokens.
  oov_tokens: np.ndarray  # int64[reviews], those of them the model does not know.
  token_ids: np.ndarray  # int64[tokens read], the ids the model reads (truncated), in order.
  token_rows: np.ndarray  # int64[tokens read], the review of each of them.

  @property
  def reviews(self):
    """How many reviews."""
    return len(self.probability)


def collect(batches):
  """The `ReviewSignals` of batches of (outputs, model input).

  Args:
    batches: iterable of (outputs, model_input): outputs {"probability", "token_count",
      "oov_share"} of numpy [batch] (the serving signature's), model_input int[batch, time], right-
      padded, truncated (the token_ids signature's; an empty review's row holds a placeholder).
  """
  parts, offset = [], 0
  for outputs, model_input in batches:
    count = np.asarray(outputs["token_count"], np.int64)
    read = np.minimum(count, model_input.shape[1])  # The batch is as wide as its longest read.
    rows, columns = np.nonzero(np.arange(model_input.shape[1]) < read[:, None])
    parts.append((np.asarray(outputs["probability"], np.float64), count,
                  np.round(np.asarray(outputs["oov_share"], np.float64) * count).astype(np.int64),
                  model_input[rows, columns].astype(np.int64), rows + offset))
    offset += len(count)
  if not parts:
    return ReviewSignals(np.zeros([0]), *[np.zeros([0], np.int64)] * 4)
  return ReviewSignals(*(np.concatenate(column) for column in zip(*parts)))


def aggregate(signals, vocab_size, weights=None):
  """Histograms of the signals, each review counted `weights` times (once by default).

  Returns:
    {"tokens", "oov_tokens", "length_histogram" (reviews per `LENGTH_EDGES` bin),
     "score_histogram" (reviews per `SCORE_BINS` bin), "token_histogram" (tokens read per id)}.
  """
  weights = np.ones(signals.reviews) if weights is None else weights
  score_bins = np.minimum((signals.probability * SCORE_BINS).astype(np.int64), SCORE_BINS - 1)
  return {"tokens": float(weights @ signals.token_count),
          "oov_tokens": float(weights @ signals.oov_tokens),
          "length_histogram": np.bincount(np.digitize(signals.token_count, LENGTH_EDGES),
                                          weights, len(LENGTH_EDGES) + 1),
          "score_histogram": np.bincount(score_bins, weights, SCORE_BINS),
          "token_histogram": np.bincount(signals.token_ids, weights[signals.token_rows],
                                         vocab_size)}


def summarize(signals, vocab_size, clusters):
  """The JSON summary of `signals` (`aggregate` with counts), of reviews from `clusters` movies."""
  histograms = aggregate(signals, vocab_size)
  return {"reviews": signals.reviews, "clusters": clusters,
          **{name: int(value) if np.isscalar(value) else value.astype(np.int64).tolist()
             for name, value in histograms.items()}}


def baseline(classifier, data_dir, metadata):
  """What `classifier` sees of the validation reviews of a prepared dataset: an export's
  `drift_baseline`.

  Args:
    classifier: an `export.RawTextClassifier`.
    data_dir: the prepared dataset the model was trained on, and `metadata` its metadata.json.
  """
  validation = metadata["splits"]["validation"]
  files = prepared_dataset.split_files(data_dir, "validation", metadata)

  @tf.function(input_signature=[tf.RaggedTensorSpec([None, None], tf.int32, ragged_rank=1)])
  def classify(ids):
    """The serving outputs and the model's input of ids, as the signatures compute them."""
    return (classifier.classify(ids),
            classifier.model_input(classifier.known_ids(ids)))

  def batches():
    """(numpy outputs, model input) per batch of the records."""
    for serialized in tf.data.TFRecordDataset(files).batch(SCORING_BATCH):
      outputs, model_input = classify(records.parse(serialized)[0])
      yield {name: value.numpy() for name, value in outputs.items()}, model_input.numpy()

  # Movies, or reviews when the source names none (each then its own cluster).
  return summarize(collect(batches()), classifier.vocab_size,
                   validation["movies"] or validation["examples"])


def js_distance(p, q):
  """The Jensen-Shannon distance (base 2, in [0, 1]) of two histograms of counts."""
  p, q = np.asarray(p, np.float64), np.asarray(q, np.float64)
  if not p.sum() or not q.sum():
    return 0.0
  p, q = p / p.sum(), q / q.sum()
  middle = (p + q) / 2
  divergence = sum(0.5 * np.sum(x[x > 0] * np.log2(x[x > 0] / middle[x > 0])) for x in (p, q))
  return float(np.sqrt(max(divergence, 0.0)))
