"""The data gate: thresholds on numbers worked out by hand, and shifted generated corpora.

Production's view of the reviews comes from a stand-in model here (the real tokenizer and a
vocabulary, a score from counting the generator's sentiment words), in place of an export:
tests/retraining/test_retrain.py runs the gate with real exports.
"""

import numpy as np
import pytest
import tensorflow as tf

from trainer.data import sources
from trainer.data import text
from trainer.retraining import data_gate
from trainer.serving import evaluation
from trainer.serving import review_signals
from trainer.testing import synthetic_imdb

REVIEWS_PER_FOLDER, REVIEWS_PER_MOVIE, MEDIAN_WORDS = 300, 4, 40
SAMPLED = 300  # Reviews of each split that production scores.
MAX_LENGTH = 64
# Words the generator never writes: a new vocabulary.
FOREIGN = ("cinéma", "génial", "nul", "histoire", "acteurs", "scène", "très", "mauvais")
# The generator's sentiment words, which the stand-in model counts.
SENTIMENT = {**dict.fromkeys(synthetic_imdb._POSITIVE, 1),  # pylint: disable=protected-access
             **dict.fromkeys(synthetic_imdb._NEGATIVE, -1)}  # pylint: disable=protected-access


def statistics_of(corpus):
  """`statistics.split_summaries` of a corpus, as prepare's metadata would give them."""
  labels = {split: [r.label for r in corpus.reviews if r.split == split] for split in ("train",
                                                                                       "test")}
  return {split: {"examples": len(values), "positive_share": float(np.mean(values))}
          for split, values in labels.items()}


def corpus(tmp_path, name, seed, median_words=MEDIAN_WORDS, positive_share=0.5, foreign=0.0):
  """A generated corpus; `positive_share` of each split positive, `foreign` of its words new."""
  files = synthetic_imdb.generate(REVIEWS_PER_FOLDER, REVIEWS_PER_MOVIE, median_words, seed)
  rng = np.random.default_rng(seed)
  kept = {}
  for path, data in files.items():
    if "/pos/" in path and rng.random() > positive_share / (1 - positive_share):
      continue  # Dropped: fewer positive reviews.
    if foreign and path.endswith(".txt") and "/urls_" not in path:
      data = " ".join(str(rng.choice(FOREIGN)) if rng.random() < foreign else word
                      for word in data.decode().split(" ")).encode()
    kept[path] = data
  return sources.read_tarball(synthetic_imdb.write_tarball(kept, str(tmp_path / f"{name}.tgz")))


class StandInModel:
  """Production's view of raw reviews without an export: the real tokenizer, a vocabulary of the
  baseline's train reviews, and a score from the sentiment words it counts."""

  def __init__(self, baseline_corpus):
    """The vocabulary: every token of the baseline's train reviews."""
    texts = [r.text for r in baseline_corpus.reviews if r.split == "train"]
    tokens, counts = np.unique(text.tokenize(tf.constant(texts)).flat_values.numpy(),
                               return_counts=True)
    self.vocabulary = text.build_vocabulary(
        {token.decode(): int(count) for token, count in zip(tokens, counts)}, 1000)
    self.table = text.build_lookup_table(self.vocabulary)

  def signals(self, model_dir, texts):
    """What `evaluation.signals` returns for an export, computed here."""
    del model_dir
    tokens = text.tokenize(tf.constant(texts))
    ids = text.lookup_tokens(tokens, self.table)
    sentiment = np.array([sum(SENTIMENT.get(token.decode(), 0) for token in review)
                          for review in tokens.to_list()])
    count = ids.row_lengths().numpy()
    outputs = {"probability": 1 / (1 + np.exp(-sentiment)), "token_count": count,
               "oov_share": tf.reduce_sum(tf.cast(ids == text.OOV_ID, tf.int64), 1).numpy()
                            / np.maximum(count, 1)}
    model_input = text.truncate(ids, MAX_LENGTH, "last").to_tensor().numpy()
    return review_signals.collect([(outputs, model_input)])


@pytest.fixture(scope="module")
def production(tmp_path_factory):
  """(The stand-in production model, its export metadata: data statistics and drift baseline)."""
  baseline_corpus = corpus(tmp_path_factory.mktemp("baseline"), "baseline", seed=0)
  model = StandInModel(baseline_corpus)
  with pytest.MonkeyPatch.context() as patch:
    patch.setattr(evaluation, "signals", model.signals)
    signals, clusters = data_gate.production_view(baseline_corpus, "", SAMPLED)["train"]
  baseline = review_signals.summarize(signals, len(model.vocabulary), len(set(clusters)))
  return model, {"data_statistics": statistics_of(baseline_corpus), "drift_baseline": baseline}


def gate(production, new_corpus, monkeypatch):
  """The data gate of `new_corpus` against the stand-in production."""
  model, metadata = production
  monkeypatch.setattr(evaluation, "signals", model.signals)
  view = data_gate.production_view(new_corpus, "", SAMPLED)
  return data_gate.check(statistics_of(new_corpus), metadata, view)


def test_an_unshifted_resample_passes(tmp_path, production, monkeypatch):
  """Other reviews and movies from the same generator: every statistic within its noise."""
  result = gate(production, corpus(tmp_path, "same", seed=1), monkeypatch)
  assert result["problems"] == [] and result["notes"] == []
  statistics = {(check["split"], check["statistic"]) for check in result["checks"]}
  assert statistics == {(split, name) for split in ("train", "test") for name in (
      "examples", "positive_share", "oov_rate", "token_histogram", "length_histogram")} | {
          ("test", "score_histogram")}
  sampled = [check for check in result["checks"] if "noise" in check]
  assert all(200 < check["reviews"] < 400 and check["movies"] == check["reviews"] / 8
             for check in sampled)  # Whole movies of 8 reviews, about 300 reviews.


@pytest.mark.parametrize("shift,problems", [
    ({"foreign": 0.3}, ["train: the share of tokens production's vocabulary does not know rose",
                        "train: the distribution of the ids it reads moved",
                        "test: the share of tokens production's vocabulary does not know rose"]),
    ({"median_words": 80}, ["train: the distribution of review lengths moved",
                            "test: the distribution of review lengths moved"]),
    ({"positive_share": 0.25}, ["train: positive reviews 2", "test: positive reviews 2",
                               "test: the distribution of its scores (prediction drift) moved"]),
])
def test_a_shift_is_caught(tmp_path, production, monkeypatch, shift, problems):
  """A new vocabulary (30% of the words), reviews twice as long (median 80 words, not 40), fewer
  positive reviews (25%, in both splits): each is refused, saying what moved. (At these sample
  sizes, 300 reviews a side, the noise hides a length shift of 1.5 times on the test split.)"""
  result = gate(production, corpus(tmp_path, "shifted", seed=1, **shift), monkeypatch)
  for problem in problems:
    assert any(found.startswith(problem) for found in result["problems"]), result["problems"]


@pytest.mark.parametrize("train,problem", [
    ({"examples": 1000, "positive_share": 0.585}, None),  # 3.8 standard errors.
    ({"examples": 1000, "positive_share": 0.595}, "train: positive reviews 59.5% vs 50.0%"),
    ({"examples": 500, "positive_share": 0.5}, None),
    ({"examples": 499, "positive_share": 0.5}, "train: 499 reviews vs 1000"),
])
def test_metadata_thresholds(train, problem):
  """Half the reviews is the least; the positive share may move 4 standard errors of the
  difference of two shares: 1,000 reviews each, pooled share p = 0.5425 for 0.585, so
  4 sqrt(p (1 - p) (1/1000 + 1/1000)) = 0.0891 > 0.085; for 0.595, 0.0890 < 0.095."""
  baseline = {"data_statistics": {split: {"examples": 1000, "positive_share": 0.5}
                                  for split in ("train", "test")}}
  new = {"train": train, "test": {"examples": 1000, "positive_share": 0.5}}
  result = data_gate.check(new, baseline)
  assert result["baseline"]
  assert [found[:len(problem)] for found in result["problems"]] == ([problem] if problem else [])
  [check] = [c for c in result["checks"] if (c["split"], c["statistic"]) == ("train",
                                                                             "positive_share")]
  pooled = (train["positive_share"] * train["examples"] + 500) / (train["examples"] + 1000)
  assert check["threshold"] == pytest.approx(
      4 * np.sqrt(pooled * (1 - pooled) * (1 / train["examples"] + 1 / 1000)), rel=1e-12)


def test_no_baseline_or_an_old_export(production):
  """The first model: nothing to compare. An export without drift baseline: the metadata only,
  and a note saying what was not compared."""
  new = {"train": {"examples": 1000, "positive_share": 0.9}}
  assert data_gate.check(new, None) == {"baseline": False, "problems": [], "checks": [],
                                        "notes": [], "new": new, "production": None}
  old = {"data_statistics": production[1]["data_statistics"]}
  result = data_gate.check(statistics_of_nothing := {"train": {"examples": 800,
                                                               "positive_share": 0.5}}, old)
  assert result["problems"] == [] and "has no drift baseline" in result["notes"][0]
  assert result["new"] == statistics_of_nothing
