"""Paired comparison of two models scored on the same reviews: McNemar's exact test.

Only the reviews the two models disagree on carry evidence: b where only the candidate is right,
c where only production is. Under "equally accurate", each disagreement is a fair coin, so the
two-sided p-value is P(Binomial(b + c, 1/2) at least as far from (b + c) / 2 as observed).
"""

import dataclasses

import numpy as np

TEST_NAME = "mcnemar_exact"


@dataclasses.dataclass(frozen=True)
class PairedComparison:
  """Two models' accuracies on the same reviews and the significance of their difference."""
  candidate_accuracy: float
  production_accuracy: float
  examples: int
  candidate_only_correct: int  # b: reviews only the candidate got right.
  production_only_correct: int  # c: reviews only production got right.
  p_value: float
  test: str = TEST_NAME

  @property
  def improvement(self):
    """Candidate accuracy minus production accuracy."""
    return self.candidate_accuracy - self.production_accuracy


def mcnemar_exact_p_value(b, c):
  """Two-sided exact McNemar p-value for b and c discordant pairs (1.0 when there are none)."""
  n, tail = b + c, min(b, c)
  if n == 0:
    return 1.0
  # Sum of C(n, k) for k <= tail, in exact integers; true division of Python ints rounds right.
  term = total = 1
  for k in range(tail):
    term = term * (n - k) // (k + 1)
    total += term
  return min(1.0, 2 * total / 2**n)


def compare(candidate_correct, production_correct):
  """The paired comparison of two boolean arrays: review i answered right by each model."""
  candidate_correct = np.asarray(candidate_correct, bool)
  production_correct = np.asarray(production_correct, bool)
  if candidate_correct.shape != production_correct.shape or candidate_correct.ndim != 1:
    raise ValueError(f"Outcomes of different reviews: shapes {candidate_correct.shape} and "
                     f"{production_correct.shape}.")
  if not candidate_correct.size:
    raise ValueError("No reviews to compare the models on.")
  b = int(np.sum(candidate_correct & ~production_correct))
  c = int(np.sum(~candidate_correct & production_correct))
  return PairedComparison(candidate_accuracy=float(candidate_correct.mean()),
                          production_accuracy=float(production_correct.mean()),
                          examples=int(candidate_correct.size), candidate_only_correct=b,
                          production_only_correct=c, p_value=mcnemar_exact_p_value(b, c))
