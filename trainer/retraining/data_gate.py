"""The data gate of retraining: is the new dataset still like the one production learned from?

A prepared dataset's `metadata.json` already counts every split's reviews, labels, token
lengths and out-of-vocabulary rate; each export keeps those of its training data
(`data.statistics.split_summaries`, under `data_statistics` in `export_metadata.json`). Before
training, retraining compares the new dataset with production's and refuses to train when, in the
train or the test split, any of these moved beyond its threshold (docs/operations.md):

  - the share of positive reviews moved by more than MAX_POSITIVE_SHARE_SHIFT (10 points);
  - fewer than MIN_EXAMPLES_RATIO (half) as many reviews;
  - the out-of-vocabulary rate more than MAX_OOV_RATE_RATIO (2) times production's;
  - the median review length in tokens below half or above twice production's.
"""

MAX_POSITIVE_SHARE_SHIFT = 0.10
MIN_EXAMPLES_RATIO = 0.5
MAX_OOV_RATE_RATIO = 2.0
MEDIAN_LENGTH_RATIOS = (0.5, 2.0)
GATED_SPLITS = ("train", "test")


def _split_problems(split, new, old):
  """What moved too far in one split, as sentences."""
  problems = []
  shift = new["positive_share"] - old["positive_share"]
  if abs(shift) > MAX_POSITIVE_SHARE_SHIFT:
    problems.append(f"{split}: positive reviews {new['positive_share']:.1%} vs "
                    f"{old['positive_share']:.1%} (moved by more than "
                    f"{MAX_POSITIVE_SHARE_SHIFT:.0%} points)")
  if new["examples"] < MIN_EXAMPLES_RATIO * old["examples"]:
    problems.append(f"{split}: {new['examples']} reviews vs {old['examples']} (fewer than "
                    f"{MIN_EXAMPLES_RATIO:g} of them)")
  if new["oov_rate"] > MAX_OOV_RATE_RATIO * old["oov_rate"]:
    problems.append(f"{split}: out-of-vocabulary rate {new['oov_rate']:.4f} vs "
                    f"{old['oov_rate']:.4f} (more than {MAX_OOV_RATE_RATIO:g} times)")
  low, high = MEDIAN_LENGTH_RATIOS
  if not low * old["median_tokens"] <= new["median_tokens"] <= high * old["median_tokens"]:
    problems.append(f"{split}: median length {new['median_tokens']:g} tokens vs "
                    f"{old['median_tokens']:g} (outside {low:g}x-{high:g}x)")
  return problems


def check(new, baseline):
  """Compares dataset statistics `new` with `baseline` (production's, or None).

  Returns:
    {"baseline": bool, "problems": [sentences], "new": new, "production": baseline}; no
    problems when there is no baseline (first model, or one exported without statistics).
  """
  problems = []
  for split in GATED_SPLITS if baseline else ():
    if split in new and split in baseline:
      problems += _split_problems(split, new[split], baseline[split])
  return {"baseline": baseline is not None, "problems": problems, "new": new,
          "production": baseline}
