"""Predictions that say when not to trust them, from the serving outputs (a stand-in signature)."""

import json

import pytest
import tensorflow as tf

from trainer.serving import predict


def serving(token_count=None, oov_share=None):
  """A stand-in `serving_default`: fixed answers for 3 reviews, with the counts of version 2."""

  def serve(reviews):
    """The outputs of an export for `reviews` (3 of them)."""
    assert reviews.shape == (3,)
    outputs = {"probability": tf.constant([0.36, 0.05, 0.97]),
               "label": tf.constant([0, 0, 1], tf.int64),
               "sentiment": tf.constant(["negative", "negative", "positive"])}
    if token_count is not None:
      outputs.update(token_count=tf.constant(token_count, tf.int64),
                     oov_share=tf.constant(oov_share, tf.float32))
    return outputs

  return serve


REVIEWS = ["", "Un film magnifique, je l'ai adoré.", "A wonderful, moving film."]


def test_empty_and_largely_unknown_reviews_are_flagged():
  """An empty review and one of 75% unknown tokens get a warning; one of 20% does not."""
  predictions = predict.predict(serving([0, 8, 5], [0.0, 0.75, 0.2]), REVIEWS)
  assert [p["warning"] is not None for p in predictions] == [True, True, False]
  assert predictions[0]["warning"].startswith("empty review")
  assert predictions[1]["warning"].startswith("unknown words: 75% of its 8 tokens")
  assert predictions[1] == {"probability": 0.05, "label": 0, "sentiment": "negative",
                            "token_count": 8, "oov_share": 0.75,
                            "warning": predictions[1]["warning"]}


def test_text_and_json_lines_carry_the_warning():
  """Text: a fourth column `WARNING: ...` only when flagged; JSON: the counts and `warning`."""
  predictions = predict.predict(serving([0, 8, 5], [0.0, 0.75, 0.2]), REVIEWS)
  lines = [predict.format_prediction(i, review, prediction, "text")
           for i, (review, prediction) in enumerate(zip(REVIEWS, predictions))]
  assert lines[0].split("\t")[:2] == ["0.3600", "negative"]
  assert lines[0].split("\t")[3].startswith("WARNING: empty review")
  assert lines[2] == "0.9700\tpositive\tA wonderful, moving film."
  record = json.loads(predict.format_prediction(1, REVIEWS[1], predictions[1], "json"))
  assert record["index"] == 1 and record["oov_share"] == 0.75
  assert record["warning"].startswith("unknown words")
  assert json.loads(predict.format_prediction(2, REVIEWS[2], predictions[2], "json"))[
      "warning"] is None


@pytest.mark.parametrize("share,flagged", [(0.3, False), (0.31, True)])
def test_flagged_from_more_than_30_percent_unknown(share, flagged):
  """The threshold: more than MAX_TRUSTED_OOV_SHARE (0.3) of the tokens unknown."""
  predictions = predict.predict(serving([4, 4, 4], [share] * 3), REVIEWS)
  assert (predictions[0]["warning"] is not None) == flagged


def test_an_export_of_format_1_still_predicts_without_counts():
  """Older exports return no counts: predictions come without them, and without warnings."""
  predictions = predict.predict(serving(), REVIEWS)
  assert predictions[0] == {"probability": 0.36, "label": 0, "sentiment": "negative",
                            "warning": None}
