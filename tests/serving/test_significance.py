"""McNemar's one-sided exact tests, their power and the movie bootstrap, on numbers worked out by
hand."""

import math

import numpy as np
import pytest

from trainer.serving import significance


def binomial_upper_tail(n, k, q=0.5):
  """P(Binomial(n, q) >= k) from its definition, in floating point (small counts only)."""
  return sum(math.comb(n, j) * q**j * (1 - q)**(n - j) for j in range(max(k, 0), n + 1))


@pytest.mark.parametrize("b,c", [(0, 0), (10, 0), (0, 10), (5, 5), (3, 10), (20, 7), (1, 60)])
def test_one_sided_p_values_are_the_exact_binomial_tails(b, c):
  """Better: P(X >= b); worse: P(X >= c), X ~ Binomial(b + c, 1/2); one is the other mirrored."""
  assert significance.upper_tail(b + c, b) == pytest.approx(binomial_upper_tail(b + c, b),
                                                            rel=1e-12)
  assert significance.upper_tail(b + c, c) == pytest.approx(binomial_upper_tail(b + c, c),
                                                            rel=1e-12)


def test_one_sided_is_half_the_two_sided_test_of_before():
  """20 to 7: P(X >= 20) is the sum of C(27, j) for j >= 20, 1,285,624, over 2^27: 0.0096; the
  old two-sided p was twice that, so a split between alpha/2 and alpha now counts."""
  assert sum(math.comb(27, j) for j in range(20, 28)) == 1_285_624
  assert significance.upper_tail(27, 20) == 1_285_624 / 2**27
  assert significance.upper_tail(4, 4) == 1 / 16  # 4 to 0: 0.0625 (two-sided, 0.125).


def test_p_value_of_large_counts_stays_finite_and_ordered():
  """25,000 reviews' worth of disagreements: no overflow; more lopsided, smaller p."""
  p_values = [significance.upper_tail(b + 12000, b) for b in (12000, 12300, 12600)]
  assert p_values[0] == pytest.approx(0.5, abs=0.01) and 0.5 > p_values[1] > p_values[2] > 0


@pytest.mark.parametrize("n,alpha,k", [
    (10, 0.05, 9),  # P(X >= 9) = 11/1024 = 0.011 < 0.05 <= P(X >= 8) = 56/1024 = 0.055.
    (20, 0.05, 15),  # P(X >= 15) = 21,700/2^20 = 0.0207; P(X >= 14) = 60,460/2^20 = 0.0577.
    (4, 0.05, None),  # Even 4 to 0 has p = 1/16 = 0.0625: nothing can be significant.
    (5, 0.05, 5),  # 5 to 0: p = 1/32 = 0.031.
    (0, 0.05, None),
])
def test_critical_value(n, alpha, k):
  """The least b that the test at alpha calls better."""
  assert significance.critical_value(n, alpha) == k


def test_detectable_difference_has_the_power_asked_for():
  """20 disagreements of 2,000 reviews at alpha 0.05 (k = 15): the candidate must win a share q
  of them with P(Binomial(20, q) >= 15) = 0.8, i.e. q = 0.7987, a difference of 20 (2q - 1) /
  2,000 = 0.00597."""
  difference = significance.detectable_difference(20, 0, 2000, 0.05)
  q = (difference * 2000 / 20 + 1) / 2
  assert binomial_upper_tail(20, 15, q) == pytest.approx(0.8, abs=1e-9)
  assert difference == pytest.approx(0.00597, abs=1e-5)
  assert significance.detectable_difference(17, 3, 2000, 0.05) == difference  # Only b + c counts.
  assert significance.detectable_difference(2, 2, 2000, 0.05) is None


def test_bootstrap_over_movies_by_hand():
  """All disagreements in one of 20 movies: a resample misses that movie, and shows no
  difference, with probability (19/20)^20 = 0.358; so p(better) is about 0.358, never 0."""
  clusters = np.repeat(np.arange(20), 10)
  production = np.zeros(200, bool)
  candidate = production.copy()
  candidate[:10] = True  # Movie 0: only the candidate is right on its 10 reviews.
  result = significance.bootstrap(candidate, production, clusters, alpha=0.05)
  standard_error = math.sqrt(0.358 * 0.642 / result["resamples"])
  assert result["p_value_better"] == pytest.approx((19 / 20)**20, abs=4 * standard_error)
  assert result["p_value_worse"] == 1.0  # Never worse in any resample.
  assert result["interval"][0] == 0.0 and result["clusters"] == 20
  assert significance.bootstrap(candidate, production, clusters, alpha=0.05) == result  # Seeded.


def test_bootstrap_of_differences_spread_over_movies_and_of_equal_models():
  """A gain in every movie shows in every resample: p = 1 / (resamples + 1); equal answers
  never differ: p = 1 both ways. A small alpha gets enough resamples to go below it."""
  clusters = np.arange(200) % 20
  production = np.zeros(200, bool)
  candidate = production.copy()
  candidate[:20] = True  # One review of each movie.
  result = significance.bootstrap(candidate, production, clusters, alpha=0.05)
  assert result["p_value_better"] == 1 / 2001 and result["resamples"] == 2000
  same = significance.bootstrap(production, production, clusters, alpha=0.05)
  assert same["p_value_better"] == same["p_value_worse"] == 1.0
  assert significance.bootstrap(candidate, production, clusters, alpha=1e-4)["resamples"] == 200_000


def test_compare_counts_the_disagreements_only():
  """Reviews both models get right or both get wrong carry no McNemar evidence."""
  candidate = np.array([1, 1, 0, 0, 1, 1, 1, 0], bool)
  production = np.array([1, 0, 0, 1, 0, 1, 0, 0], bool)
  comparison = significance.compare(candidate, production, np.arange(8), 0.05)
  assert (comparison.candidate_only_correct, comparison.production_only_correct) == (3, 1)
  assert comparison.candidate_accuracy == 5 / 8 and comparison.production_accuracy == 3 / 8
  assert comparison.examples == 8 and comparison.improvement == pytest.approx(0.25)
  assert comparison.p_value_better == 5 / 16 and comparison.p_value_worse == 15 / 16
  assert comparison.detectable_difference is None  # 4 disagreements: never significant.
  assert (comparison.alpha, comparison.power, comparison.test) == (
      0.05, 0.8, "mcnemar_exact_one_sided")
  assert comparison.bootstrap["clusters"] == 8
  with pytest.raises(ValueError, match="different reviews"):
    significance.compare(candidate, production[:4], np.arange(8), 0.05)
