"""Classifies raw reviews with an exported model (the library of `python -m trainer.predict`).

A model path is an export (a version folder with `saved_model.pb`), a folder of versions, or a
training workdir (the newest version of its export/ folder is used).
"""

import json

import tensorflow as tf

from trainer.errors import UserInputError
from trainer.serving import export
from trainer import storage

_EXCERPT_CHARACTERS = 60


def load(model_path):
  """The serving function of an export, or of the newest export under `model_path`.

  Returns:
    (function reviews string[batch] -> dict of outputs, the export's path).
  """
  if not tf.io.gfile.exists(model_path):
    raise UserInputError(f"--model={model_path} does not exist. Pass an export folder, e.g. "
                         "<workdir>/export written by python -m trainer.train.")
  path = (export.latest_export(model_path)
          or export.latest_export(storage.join(model_path, "export")) or model_path)
  export.load_metadata(path)  # Raises a clear error unless it is an export of this project.
  return tf.saved_model.load(path).signatures[export.SIGNATURE], path


def predict(serve, reviews):
  """Classifies a batch of raw reviews.

  Returns:
    A list of {"probability", "label", "sentiment"} dicts, in the order of `reviews`.
  """
  outputs = serve(reviews=tf.constant(reviews, tf.string))
  return [{"probability": round(float(probability), 6), "label": int(label),
           "sentiment": sentiment.decode()}
          for probability, label, sentiment in zip(outputs["probability"].numpy(),
                                                   outputs["label"].numpy(),
                                                   outputs["sentiment"].numpy())]


def format_prediction(index, review, prediction, output_format):
  """One output line for a review."""
  if output_format == "json":
    return json.dumps({"index": index, **prediction})
  excerpt = " ".join(review.split())[:_EXCERPT_CHARACTERS]
  return f"{prediction['probability']:.4f}\t{prediction['sentiment']}\t{excerpt}"


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

