"""What a model sees of reviews: gathered from the signatures' outputs, counted, compared."""

import numpy as np
import pytest

from trainer.serving import review_signals


def test_collect_keeps_the_ids_read_and_counts_the_unknown_tokens():
  """Two batches as the signatures give them: the ids the model reads (not the padding, not an
  empty review's placeholder, only the kept end of a long review) and the unknown tokens."""
  batches = [({"probability": np.array([0.9, 0.2]), "token_count": np.array([3, 0]),
               "oov_share": np.array([1 / 3, 0.0], np.float32)},
              np.array([[5, 1, 7], [1, 0, 0]])),  # Review 2 is empty: a placeholder 1.
             ({"probability": np.array([0.6]), "token_count": np.array([9]),
               "oov_share": np.array([4 / 9], np.float32)},
              np.array([[4, 4, 1, 3]]))]  # 9 tokens, the last 4 read.
  signals = review_signals.collect(batches)
  np.testing.assert_array_equal(signals.probability, [0.9, 0.2, 0.6])
  np.testing.assert_array_equal(signals.token_count, [3, 0, 9])
  np.testing.assert_array_equal(signals.oov_tokens, [1, 0, 4])
  np.testing.assert_array_equal(signals.token_ids, [5, 1, 7, 4, 4, 1, 3])
  np.testing.assert_array_equal(signals.token_rows, [0, 0, 0, 2, 2, 2, 2])
  assert review_signals.collect([]).reviews == 0


def test_aggregate_counts_each_review_as_often_as_weighted():
  """Histograms of ids, lengths (bin 0: empty; 3 tokens: bin 3; 9: bin 8, 8 <= 9 < 10) and
  scores (0.9: bin 9 of 10), each review counted by its weight."""
  signals = review_signals.ReviewSignals(
      probability=np.array([0.9, 0.2, 0.6]), token_count=np.array([3, 0, 9]),
      oov_tokens=np.array([1, 0, 4]), token_ids=np.array([5, 1, 7, 4, 4, 1, 3]),
      token_rows=np.array([0, 0, 0, 2, 2, 2, 2]))
  counts = review_signals.aggregate(signals, vocab_size=8, weights=np.array([2.0, 1.0, 0.0]))
  assert (counts["tokens"], counts["oov_tokens"]) == (6, 2)
  np.testing.assert_array_equal(counts["token_histogram"], [0, 2, 0, 0, 0, 2, 0, 2])
  assert counts["length_histogram"][[0, 3, 8]].tolist() == [1, 2, 0]
  assert counts["score_histogram"][[2, 6, 9]].tolist() == [1, 0, 2]
  summary = review_signals.summarize(signals, vocab_size=8, clusters=2)
  assert (summary["reviews"], summary["clusters"], summary["tokens"]) == (3, 2, 12)
  assert summary["token_histogram"] == [0, 2, 0, 1, 2, 1, 0, 1]


def test_js_distance_by_hand():
  """Apart: 1; equal (whatever the counts): 0; (1, 0) vs (1/2, 1/2): the mixture is (3/4, 1/4),
  the divergence (log2(4/3) + (log2(2/3) + log2(2)) / 2) / 2 = 0.3113, its root 0.5579."""
  assert review_signals.js_distance([1, 0], [0, 1]) == 1.0
  assert review_signals.js_distance([2, 2], [1, 1]) == 0.0
  by_hand = np.sqrt((np.log2(4 / 3) + (np.log2(2 / 3) + 1) / 2) / 2)
  assert review_signals.js_distance([1, 0], [1, 1]) == pytest.approx(by_hand, rel=1e-12)
