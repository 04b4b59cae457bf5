"""McNemar's exact test, on numbers worked out by hand."""

import math

import numpy as np
import pytest

from trainer.serving import significance


def binomial_two_sided(b, c):
  """The exact McNemar p-value from its definition, in floating point (small counts only)."""
  n = b + c
  tail = sum(math.comb(n, k) for k in range(min(b, c) + 1)) / 2**n
  return min(1.0, 2 * tail) if n else 1.0


@pytest.mark.parametrize("b,c", [(0, 0), (10, 0), (0, 10), (5, 5), (3, 10), (20, 7), (1, 60)])
def test_p_value_is_the_two_sided_exact_binomial(b, c):
  """Symmetric in b and c, 1 without disagreements, equal to the definition."""
  assert significance.mcnemar_exact_p_value(b, c) == pytest.approx(binomial_two_sided(b, c),
                                                                   rel=1e-12)
  assert significance.mcnemar_exact_p_value(b, c) == significance.mcnemar_exact_p_value(c, b)


def test_p_value_of_large_counts_stays_finite_and_ordered():
  """25,000 reviews' worth of disagreements: no overflow; more lopsided, smaller p."""
  p_values = [significance.mcnemar_exact_p_value(b, 12000) for b in (12000, 12300, 12600)]
  assert p_values[0] == 1.0 and 1.0 > p_values[1] > p_values[2] > 0


def test_compare_counts_the_disagreements_only():
  """Reviews both models get right or both get wrong carry no evidence."""
  candidate = np.array([1, 1, 0, 0, 1, 1, 1, 0], bool)
  production = np.array([1, 0, 0, 1, 0, 1, 0, 0], bool)
  comparison = significance.compare(candidate, production)
  assert (comparison.candidate_only_correct, comparison.production_only_correct) == (3, 1)
  assert comparison.candidate_accuracy == 5 / 8 and comparison.production_accuracy == 3 / 8
  assert comparison.examples == 8 and comparison.improvement == pytest.approx(0.25)
  assert comparison.p_value == binomial_two_sided(3, 1) and comparison.test == "mcnemar_exact"
  with pytest.raises(ValueError, match="different reviews"):
    significance.compare(candidate, production[:4])
