"""The data gate's thresholds, on numbers worked out by hand."""

import pytest

from trainer.data import statistics
from trainer.retraining import data_gate


def split(examples=1000, positive=500, oov_rate=0.02, median=200.0):
  """The metadata of one prepared split, as prepare writes it."""
  return {"examples": examples, "labels": {"neg": examples - positive, "pos": positive},
          "oov_rate": oov_rate, "token_length": {"p50": median, "p90": 2 * median}}


BASELINE = statistics.split_summaries({"splits": {"train": split(), "test": split()}})


@pytest.mark.parametrize("train,problem", [
    (split(), None),
    (split(positive=590, oov_rate=0.039, median=390, examples=1000), None),  # Just inside.
    (split(positive=610), "train: positive reviews 61.0% vs 50.0%"),
    (split(examples=499, positive=250), "train: 499 reviews vs 1000"),
    (split(oov_rate=0.041), "train: out-of-vocabulary rate 0.0410 vs 0.0200"),
    (split(median=99), "train: median length 99 tokens vs 200"),
    (split(median=401), "train: median length 401 tokens vs 200"),
])
def test_data_gate_thresholds(train, problem):
  """Each documented threshold refuses just beyond it, and nothing just inside it."""
  new = statistics.split_summaries({"splits": {"train": train, "test": split()}})
  result = data_gate.check(new, BASELINE)
  assert result["baseline"]
  if problem is None:
    assert result["problems"] == []
  else:
    [found] = result["problems"]
    assert found.startswith(problem)


def test_no_baseline_means_nothing_to_compare():
  """The first model, or one exported before the gate: no baseline, no problems."""
  new = statistics.split_summaries({"splits": {"train": split(positive=900), "test": split()}})
  assert data_gate.check(new, None) == {"baseline": False, "problems": [], "new": new,
                                        "production": None}
