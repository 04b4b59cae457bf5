"""Paired comparison of two models scored on the same reviews: McNemar's exact test, one-sided
each way, its power, and a paired bootstrap over movies.

Only the reviews the two models disagree on carry McNemar's evidence: b where only the candidate
is right, c where only production is. Under "equally accurate" each of the n = b + c
disagreements is a fair coin, so "is the candidate better?" has the p-value P(Binomial(n, 1/2)
>= b), and "is it worse?" P(Binomial(n, 1/2) >= c).

Power: at level alpha the test says "better" once b >= k, the least k with P(Binomial(n, 1/2) >=
k) < alpha. A candidate right on a share q of the n disagreements is better by n (2q - 1) / N on
N reviews, and is found so with probability P(Binomial(n, q) >= k). The detectable difference is
the least such difference found with probability POWER, given the n disagreements seen (None
when no split of them could be significant).

McNemar takes reviews as independent; IMDB has up to 30 reviews per movie, which share words
and opinions. The bootstrap resamples whole movies (clusters) with replacement, paired (both
models' answers on a review travel together), and measures the accuracy difference in each
resample: its p-value of "better" is the share of resamples (plus one) in which the candidate
is not better, and likewise for "worse".
"""

import dataclasses
import math

import numpy as np

TEST_NAME = "mcnemar_exact_one_sided"
POWER = 0.8
BOOTSTRAP_RESAMPLES = 2000  # At least; more for a small alpha (see `bootstrap`).
BOOTSTRAP_SEED = 0
_BOOTSTRAP_CHUNK = 250  # Resamples drawn at once (memory: chunk x clusters counts).


@dataclasses.dataclass(frozen=True)
class PairedComparison:
  """Two models' accuracies on the same reviews and the evidence about their difference."""
  candidate_accuracy: float
  production_accuracy: float
  examples: int
  candidate_only_correct: int  # b: reviews only the candidate got right.
  production_only_correct: int  # c: reviews only production got right.
  p_value_better: float  # One-sided McNemar: is the candidate better?
  p_value_worse: float  # One-sided McNemar: is it worse?
  alpha: float  # The level both tests and the power are computed at.
  power: float
  detectable_difference: float | None  # Found with `power` at `alpha`; None: no difference.
  bootstrap: dict  # `bootstrap(...)`: the movie-clustered check.
  test: str = TEST_NAME

  @property
  def improvement(self):
    """Candidate accuracy minus production accuracy."""
    return self.candidate_accuracy - self.production_accuracy


def upper_tail(n, k):
  """P(Binomial(n, 1/2) >= k), exactly (1.0 for k <= 0)."""
  if k <= 0:
    return 1.0
  if k > n:
    return 0.0
  # Sum C(n, j) over the shorter side in exact integers; true division of Python ints rounds right.
  upper_is_shorter = k > n / 2
  last = n - k if upper_is_shorter else k - 1  # Terms j = 0..last are summed (by symmetry).
  term = total = 1
  for j in range(last):
    term = term * (n - j) // (j + 1)
    total += term
  return total / 2**n if upper_is_shorter else 1.0 - total / 2**n


def critical_value(n, alpha):
  """The least k with P(Binomial(n, 1/2) >= k) < alpha, or None when even k = n is not."""
  scale, term, total = 2**n, 1, 1  # total: 2^n P(Binomial(n, 1/2) >= k) at the current k.
  k = n
  while total / scale < alpha:
    term = term * k // (n - k + 1)
    total += term
    k -= 1
  return k + 1 if k < n else None


def power_of(n, k, q):
  """P(Binomial(n, q) >= k) for 0 < q < 1: the chance that the test at critical value k says
  "better" when the candidate wins a share q of the n disagreements."""
  j = np.arange(k, n + 1)
  log_factorial = np.concatenate([[0.0], np.cumsum(np.log(np.arange(1, n + 1)))])
  log_terms = (log_factorial[n] - log_factorial[j] - log_factorial[n - j]
               + j * math.log(q) + (n - j) * math.log1p(-q))
  return float(np.exp(log_terms).sum())


def detectable_difference(b, c, examples, alpha, power=POWER):
  """The least accuracy difference the one-sided test at `alpha` finds with `power` (or None).

  Given the b + c disagreements seen among `examples` reviews (see the module doc).
  """
  n = b + c
  k = critical_value(n, alpha)
  if k is None:
    return None
  low, high = 0.5, 1.0  # Shares q of the disagreements the candidate wins; power_of(q=1) = 1.
  for _ in range(60):
    middle = (low + high) / 2
    low, high = (middle, high) if power_of(n, k, middle) < power else (low, middle)
  return n * (2 * high - 1) / examples


def describe_power(facts):
  """What the test could detect, in words, from the fields of a `PairedComparison` (a dict, such
  as a decision record)."""
  disagreements = facts["candidate_only_correct"] + facts["production_only_correct"]
  if facts["detectable_difference"] is None:
    return f"with {disagreements} disagreements no difference can be significant"
  return (f"with {disagreements} disagreements the test detects "
          f"{facts['detectable_difference']:.2%} or more with power {facts['power']:g} at p < "
          f"{facts['alpha']:g}")


def bootstrap(candidate_correct, production_correct, clusters, alpha, seed=BOOTSTRAP_SEED):
  """The paired bootstrap over clusters (movies) of the accuracy difference, candidate - production.

  Args:
    candidate_correct, production_correct: bool[reviews], each model right on each review.
    clusters: [reviews] of hashable cluster ids (a review's movie, or itself without one).
    alpha: the one-sided level; the interval spans the alpha and 1 - alpha quantiles.
    seed: seeds the resamples: the same inputs give the same answer.

  Returns:
    {"method", "clusters", "resamples", "seed", "p_value_better", "p_value_worse",
     "interval": [low, high] of the difference}.
  """
  _, cluster_of = np.unique(np.asarray(clusters), return_inverse=True)
  difference = np.bincount(cluster_of, weights=candidate_correct.astype(float)
                           - production_correct.astype(float))
  size = np.bincount(cluster_of).astype(float)
  count = len(size)
  resamples = max(BOOTSTRAP_RESAMPLES, math.ceil(20 / alpha))  # p can go below alpha.
  rng = np.random.default_rng(seed)
  differences = []
  for start in range(0, resamples, _BOOTSTRAP_CHUNK):
    drawn = rng.multinomial(count, np.full(count, 1 / count),
                            size=min(_BOOTSTRAP_CHUNK, resamples - start))
    differences.append(drawn @ difference / (drawn @ size))
  differences = np.concatenate(differences)
  return {"method": "paired, resampling whole movies", "clusters": count,
          "resamples": resamples, "seed": seed,
          "p_value_better": (1 + int(np.sum(differences <= 0))) / (resamples + 1),
          "p_value_worse": (1 + int(np.sum(differences >= 0))) / (resamples + 1),
          "interval": [float(x) for x in np.quantile(differences, [alpha, 1 - alpha])]}


def compare(candidate_correct, production_correct, clusters, alpha):
  """The paired comparison of two boolean arrays: review i answered right by each model.

  Args:
    candidate_correct, production_correct: bool[reviews].
    clusters: [reviews], the movie (cluster) of each review.
    alpha: the level of the tests (the policy's max_p_value).
  """
  candidate_correct = np.asarray(candidate_correct, bool)
  production_correct = np.asarray(production_correct, bool)
  if (candidate_correct.shape != production_correct.shape or candidate_correct.ndim != 1
      or len(clusters) != candidate_correct.size):
    raise ValueError(f"Outcomes of different reviews: shapes {candidate_correct.shape} and "
                     f"{production_correct.shape}, {len(clusters)} clusters.")
  if not candidate_correct.size:
    raise ValueError("No reviews to compare the models on.")
  b = int(np.sum(candidate_correct & ~production_correct))
  c = int(np.sum(~candidate_correct & production_correct))
  examples = int(candidate_correct.size)
  return PairedComparison(
      candidate_accuracy=float(candidate_correct.mean()),
      production_accuracy=float(production_correct.mean()), examples=examples,
      candidate_only_correct=b, production_only_correct=c, p_value_better=upper_tail(b + c, b),
      p_value_worse=upper_tail(b + c, c), alpha=alpha, power=POWER,
      detectable_difference=detectable_difference(b, c, examples, alpha),
      bootstrap=bootstrap(candidate_correct, production_correct, clusters, alpha))
