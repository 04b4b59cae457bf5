"""The data gate of retraining: is the new data still like what production learned from?

Two sources of evidence, each against production's export:

- the new prepared dataset's metadata.json (reviews and labels per split) against the
  `data_statistics` of production's training data: refused when a split has fewer than
  MIN_EXAMPLES_RATIO (half) as many reviews, or when its share of positive reviews moved by more
  than NOISE_SDS (4) standard errors of the difference of two shares of these sizes;
- production's own view of a sample of the new reviews (whole movies, picked by a hash),
  scored by the production export (`serving.evaluation.signals`), against what it saw of its
  validation reviews (`drift_baseline`, `serving.review_signals`): the rate of tokens unknown to
  its vocabulary, the Jensen-Shannon distance of the distributions of the ids it reads and of
  review lengths and, on the test split (reviews production never trained on), of its scores:
  the prediction drift. Refused when one exceeds its noise: the mean plus NOISE_SDS standard
  deviations of the same statistic between two resamples of the sample's movies, one of the
  baseline's number of movies and one of the sample's (NOISE_RESAMPLES pairs, seeded), i.e. what
  two samples of these sizes from one distribution differ by.

A production model exported before the drift baseline existed is only compared by the metadata.
"""

import hashlib

import numpy as np

from trainer.data import survey
from trainer.serving import evaluation
from trainer.serving import review_signals

MIN_EXAMPLES_RATIO = 0.5
NOISE_SDS = 4.0
NOISE_RESAMPLES = 200
NOISE_SEED = 0
MIN_CLUSTERS = 8  # Fewer movies on either side: the noise cannot be measured, no drift check.
GATED_SPLITS = ("train", "test")
# Scores are compared on the test split only: production may have trained on reviews of the new
# train split, and is surer of those than of its validation reviews.
SCORED_SPLITS = ("test",)
_DISTANCES = {"token_histogram": "distribution of the ids it reads",
              "length_histogram": "distribution of review lengths",
              "score_histogram": "distribution of its scores (prediction drift)"}


# --- Production's view of the new reviews.


def _picked(group, fraction):
  """Whether a movie falls in the sample: a hash of it, as a number in [0, 1), below `fraction`."""
  return int.from_bytes(hashlib.sha256(f"drift:{group}".encode()).digest()[:8], "big") < (
      fraction * 2**64)


def production_view(corpus, model_dir, reviews_per_split):
  """What the export in `model_dir` sees of a sample of each gated split of `corpus`.

  The sample takes whole movies (`survey.review_group`), each with probability
  reviews_per_split / (the split's reviews), by a hash of the movie: the same reviews every time.

  Returns:
    {split: (`review_signals.ReviewSignals`, the movie of each review)}.
  """
  facts = survey.survey_corpus(corpus)
  sizes = {"train": sum(facts.train_group_sizes.values()), "test": facts.test_reviews}
  picked = {split: ([], []) for split in GATED_SPLITS}
  for review in corpus.reviews:
    group = survey.review_group(review.name, review.movie)
    if _picked(group, reviews_per_split / max(sizes[review.split], 1)):
      picked[review.split][0].append(review.text)
      picked[review.split][1].append(group)
  return {split: (evaluation.signals(model_dir, texts), np.array(groups))
          for split, (texts, groups) in picked.items()}


# --- Comparing.


def _statistics(new, old, scored):
  """The drift statistics of histograms `new` against `old` (`review_signals.aggregate`)."""
  rates = [counts["oov_tokens"] / max(counts["tokens"], 1) for counts in (new, old)]
  return {"oov_rate": rates[0] - rates[1],
          **{name: review_signals.js_distance(new[name], old[name]) for name in _DISTANCES
             if scored or name != "score_histogram"}}


def _noise(signals, clusters, baseline_clusters, vocab_size, scored):
  """The drift statistics between two resamples of the sample's movies, of the baseline's and the
  sample's number of movies: {name: [one per resample pair]}."""
  _, cluster_of = np.unique(clusters, return_inverse=True)
  count = cluster_of.max() + 1
  rng = np.random.default_rng(NOISE_SEED)
  replicates = []
  for _ in range(NOISE_RESAMPLES):
    old, new = (np.bincount(rng.integers(0, count, size), minlength=count)[cluster_of]
                for size in (baseline_clusters, count))
    replicates.append(_statistics(review_signals.aggregate(signals, vocab_size, new),
                                  review_signals.aggregate(signals, vocab_size, old), scored))
  return {name: [replicate[name] for replicate in replicates] for name in replicates[0]}


def _drift_checks(split, signals, clusters, baseline):
  """The checks of production's view of a split's sample against its baseline."""
  vocab_size = len(baseline["token_histogram"])
  scored = split in SCORED_SPLITS
  observed = _statistics(review_signals.aggregate(signals, vocab_size), baseline, scored)
  noise = _noise(signals, clusters, baseline["clusters"], vocab_size, scored)
  checks = []
  for name, value in observed.items():
    mean, sd = float(np.mean(noise[name])), float(np.std(noise[name], ddof=1))
    threshold = mean + NOISE_SDS * sd
    checks.append({"split": split, "statistic": name, "value": value, "threshold": threshold,
                   "refused": value > threshold,
                   "noise": {"mean": mean, "sd": sd, "resamples": NOISE_RESAMPLES},
                   "reviews": signals.reviews, "movies": int(len(set(clusters))),
                   "baseline_reviews": baseline["reviews"],
                   "baseline_movies": baseline["clusters"]})
  return checks


def _describe(check):
  """A refused check as a sentence."""
  split, value, threshold = check["split"], check["value"], check["threshold"]
  if check["statistic"] == "positive_share":
    return (f"{split}: positive reviews {check['new']:.1%} vs {check['production']:.1%} (moved "
            f"by {abs(value):.1%}, more than {NOISE_SDS:g} standard errors: {threshold:.1%})")
  if check["statistic"] == "examples":
    return (f"{split}: {check['new']} reviews vs {check['production']} (fewer than "
            f"{MIN_EXAMPLES_RATIO:g} of them)")
  sizes = (f"{check['reviews']} new reviews of {check['movies']} movies vs "
           f"{check['baseline_reviews']} of {check['baseline_movies']}")
  if check["statistic"] == "oov_rate":
    return (f"{split}: the share of tokens production's vocabulary does not know rose by "
            f"{value:.4f}, beyond the noise {threshold:.4f} of {sizes}")
  return (f"{split}: the {_DISTANCES[check['statistic']]} moved: Jensen-Shannon distance "
          f"{value:.4f}, beyond the noise {threshold:.4f} of {sizes}")


def _metadata_checks(split, new, old):
  """The checks of a split's metadata statistics against production's."""
  pooled = (new["positive_share"] * new["examples"] + old["positive_share"] * old["examples"]) / (
      new["examples"] + old["examples"])
  threshold = float(NOISE_SDS * np.sqrt(pooled * (1 - pooled)
                                       * (1 / new["examples"] + 1 / old["examples"])))
  shift = new["positive_share"] - old["positive_share"]
  return [{"split": split, "statistic": "examples", "new": new["examples"],
           "production": old["examples"], "value": new["examples"] / old["examples"],
           "threshold": MIN_EXAMPLES_RATIO, "refused": new["examples"] < (
               MIN_EXAMPLES_RATIO * old["examples"])},
          {"split": split, "statistic": "positive_share", "new": new["positive_share"],
           "production": old["positive_share"], "value": shift, "threshold": threshold,
           "refused": abs(shift) > threshold}]


def check(new, production, view=None):
  """Compares the new data with what production learned from.

  Args:
    new: `data.statistics.split_summaries` of the new prepared dataset.
    production: the production model's export metadata, or None before the first model.
    view: `production_view` of the new reviews, when production has a `drift_baseline`.

  Returns:
    {"baseline": bool, "problems": [sentences], "checks": [each statistic, its value and
    threshold], "notes": [what was not compared and why], "new": new, "production": production's
    data statistics}; no problems without a baseline (first model, or one exported without
    statistics).
  """
  statistics = (production or {}).get("data_statistics")
  checks, notes = [], []
  for split in GATED_SPLITS if statistics else ():
    if split in new and split in statistics:
      checks += _metadata_checks(split, new[split], statistics[split])
  drift_baseline = (production or {}).get("drift_baseline")
  if production and not drift_baseline:
    notes.append("production's export has no drift baseline (exported before it): the unknown "
                 "tokens, token and length distributions and scores were not compared")
  for split, (signals, clusters) in (view or {}).items() if drift_baseline else ():
    movies = len(set(clusters))
    if min(movies, drift_baseline["clusters"]) < MIN_CLUSTERS:
      notes.append(f"{split}: {movies} movies sampled, {drift_baseline['clusters']} in "
                   f"production's baseline: fewer than {MIN_CLUSTERS} to measure the noise, so "
                   "no drift checks")
    else:
      checks += _drift_checks(split, signals, clusters, drift_baseline)
  return {"baseline": statistics is not None, "problems": [_describe(item) for item in checks
                                                           if item["refused"]],
          "checks": checks, "notes": notes, "new": new, "production": statistics}
