"""Classifies raw reviews with an exported model (the library of `python -m trainer.predict`).

A model path is an export (a version folder with `saved_model.pb`), a folder of versions, or a
training workdir (the newest version of its export/ folder is used). A prediction says when not
to trust it: a review without words, or one with many words the model does not know (more than
MAX_TRUSTED_OOV_SHARE of its tokens: a review in another language), gets a warning (exports of
format version 1 lack the counts and get none).
"""

import json

import tensorflow as tf

from trainer.errors import UserInputError
from trainer.serving import export

_EXCERPT_CHARACTERS = 60
# Above every English IMDB test review measured, below reviews in other languages
# (benchmarks/examples.py; the numbers: docs/operations.md).
MAX_TRUSTED_OOV_SHARE = 0.3


def load(model_path):
  """The serving function of an export, or of the newest export under `model_path`.

  Returns:
    (function reviews string[batch] -> dict of outputs, the export's path).
  """
  if not tf.io.gfile.exists(model_path):
    raise UserInputError(f"--model={model_path} does not exist. Pass an export folder, e.g. "
                         "<workdir>/export written by python -m trainer.train.")
  path = export.resolve_export(model_path)
  export.load_metadata(path)  # Raises a clear error unless it is an export of this project.
  return tf.saved_model.load(path).signatures[export.SIGNATURE], path


def warning(prediction):
  """Why not to trust a prediction (with `token_count` and `oov_share`), or None."""
  if prediction.get("token_count") == 0:
    return "empty review: no words to judge, the score means nothing"
  if prediction.get("oov_share", 0) > MAX_TRUSTED_OOV_SHARE:
    return (f"unknown words: {prediction['oov_share']:.0%} of its {prediction['token_count']} "
            f"tokens are not in the model's vocabulary (more than {MAX_TRUSTED_OOV_SHARE:.0%}; "
            "another language?): the score means little")
  return None


def predict(serve, reviews):
  """Classifies a batch of raw reviews.

  Returns:
    A list of {"probability", "label", "sentiment", "token_count", "oov_share", "warning"}
    dicts, in the order of `reviews` (an export of format version 1 gives no counts).
  """
  outputs = {name: value.numpy() for name, value in
             serve(reviews=tf.constant(reviews, tf.string)).items()}
  predictions = []
  for i in range(len(reviews)):
    prediction = {"probability": round(float(outputs["probability"][i]), 6),
                  "label": int(outputs["label"][i]),
                  "sentiment": outputs["sentiment"][i].decode()}
    if "token_count" in outputs:
      prediction.update(token_count=int(outputs["token_count"][i]),
                        oov_share=round(float(outputs["oov_share"][i]), 4))
    predictions.append({**prediction, "warning": warning(prediction)})
  return predictions


def format_prediction(index, review, prediction, output_format):
  """One output line for a review: its warning, if any, last."""
  if output_format == "json":
    return json.dumps({"index": index, **prediction})
  excerpt = " ".join(review.split())[:_EXCERPT_CHARACTERS]
  line = f"{prediction['probability']:.4f}\t{prediction['sentiment']}\t{excerpt}"
  return f"{line}\tWARNING: {prediction['warning']}" if prediction["warning"] else line


def batches_of_lines(stream, batch_size):
  """Lines of `stream` (without line ends), in lists of up to `batch_size`."""
  batch = []
  for line in stream:
    batch.append(line.rstrip("\r\n"))
    if len(batch) == batch_size:
      yield batch
      batch = []
  if batch:
    yield batch

