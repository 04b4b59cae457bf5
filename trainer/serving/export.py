"""Exports a trained model as a SavedModel that classifies raw review strings.

The `serving_default` signature takes `reviews`, string[batch] of raw UTF-8 text, and returns
`probability` (float32[batch], of a positive review), `label` (int64[batch], 1 = positive),
`sentiment` (string[batch], "positive" or "negative") and what says when not to trust them:
`token_count` (int64[batch], the review's tokens) and `oov_share` (float32[batch], the share of
them the model does not know; 0 for an empty review). The `token_ids` signature returns the
model's input ids for the same reviews. Inside the graph the reviews go through the very
tokenizer, vocabulary and truncation that prepared the training data (`text.encode`,
`text.truncate`), so serving sees exactly the ids training saw.

An export is a directory `<root>/<version>/` (version: seconds since the epoch, the layout TF
Serving watches) with the SavedModel, TF Serving's warm-up requests (`serving.warmup`),
`vocab.txt`, and `export_metadata.json` (test metrics,
config, versions, the data's checksums, and `drift_baseline`: what the model saw of its validation
reviews, `serving.review_signals`) to judge it by later. It is written under a temporary
name and renamed; on object stores, where folders cannot be renamed, `saved_model.pb` is
copied last, so that nothing loads a half-copied export.
"""

import contextlib
import datetime
import os
import re
import tempfile
import time
import uuid

import keras
import tensorflow as tf

from trainer.data import text
from trainer.errors import UserInputError
from trainer.modeling import model as model_lib
from trainer.serving import warmup
from trainer import storage

EXPORT_FORMAT = "imdb-bilstm-export"
# 2 added the outputs token_count and oov_share, and drift_baseline; token_ids are capped to the
# model's vocabulary. Version 1 exports are still read and scored (by their label).
FORMAT_VERSION = 2
READABLE_FORMAT_VERSIONS = (1, 2)
METADATA_FILE = "export_metadata.json"
VOCAB_FILE = "vocab.txt"
SAVED_MODEL_FILE = "saved_model.pb"
SIGNATURE = "serving_default"
TOKEN_IDS_SIGNATURE = "token_ids"  # The model's input for raw reviews, to check tokenization.
POSITIVE, NEGATIVE = "positive", "negative"
# Ends the errors about a file that is not the metadata of an export.
METADATA_FIX = "it is not the metadata of an imdb-bilstm export; export the model again."
_VERSION_PATTERN = re.compile(r"[A-Za-z0-9._-]+")  # A version names a folder.


@contextlib.contextmanager
def _float32_policy():
  """Inside the block, new Keras layers compute in float32 (serving needs no mixed precision)."""
  previous = keras.mixed_precision.global_policy()
  keras.mixed_precision.set_global_policy("float32")
  try:
    yield
  finally:
    keras.mixed_precision.set_global_policy(previous)


class RawTextClassifier:
  """The model behind a raw-text function: tokenize, look up, truncate, pad, classify."""

  def __init__(self, model, vocabulary, config):
    """Wraps a float32 `model` of `config` (a `config.Config`) whose ids come from `vocabulary`."""
    self.model = model
    self.vocabulary = vocabulary
    self.table = text.build_lookup_table(vocabulary)
    self.max_length = config.input.max_length
    self.keep = config.input.keep
    self.vocab_size = config.data.vocab_size

  def known_ids(self, ids):
    """The ids as the model knows them: those of its vocabulary, the others `text.OOV_ID`.

    Args:
      ids: RaggedTensor int[batch, (tokens)] of the vocabulary (training uses its first
        vocab_size).

    Returns:
      RaggedTensor int64[batch, (tokens)].
    """
    ids = tf.cast(ids, tf.int64)
    return tf.where(ids >= self.vocab_size, tf.constant(text.OOV_ID, tf.int64), ids)

  def model_input(self, ids):
    """The model's input for the known ids of whole reviews.

    Args:
      ids: RaggedTensor int64[batch, (tokens)], from `known_ids`.

    Returns:
      int32[batch, time], truncated and right-padded; an empty review becomes the single id
      `text.OOV_ID` (the masked LSTM needs one real step per row).
    """
    ids = text.truncate(ids, self.max_length, self.keep)
    empty = tf.equal(ids.row_lengths(), 0)
    placeholder = tf.RaggedTensor.from_row_lengths(
        tf.fill([tf.reduce_sum(tf.cast(empty, tf.int32))], tf.constant(text.OOV_ID, tf.int64)),
        tf.cast(empty, tf.int64))
    ids = tf.concat([ids, placeholder], axis=1)
    # At least one time step, also for an empty batch (the LSTM loop cannot run zero steps).
    tokens = tf.cast(ids.to_tensor(default_value=text.PAD_ID), tf.int32)
    return tf.pad(tokens, [[0, 0], [0, tf.maximum(1 - tf.shape(tokens)[1], 0)]])

  def token_ids(self, reviews):
    """The model's input for raw reviews: string[batch] -> int32[batch, time] (`model_input`)."""
    return self.model_input(self.known_ids(text.encode(reviews, self.table)))

  def classify(self, ids):
    """Classifies reviews given as ids, with the signals that say how far to trust it.

    Args:
      ids: RaggedTensor int[batch, (tokens)], whole reviews in ids of the vocabulary.

    Returns:
      {"probability": float32[batch], "label": int64[batch], "sentiment": string[batch],
       "token_count": int64[batch], "oov_share": float32[batch]}.
    """
    ids = self.known_ids(ids)
    token_count = ids.row_lengths()
    unknown = tf.reduce_sum(tf.cast(tf.equal(ids, text.OOV_ID), tf.int64), axis=1)
    logits = self.model(self.model_input(ids), training=False)[:, 0]
    probability = tf.sigmoid(tf.cast(logits, tf.float32))
    positive = probability >= 0.5
    return {"probability": probability, "label": tf.cast(positive, tf.int64),
            "sentiment": tf.where(positive, POSITIVE, NEGATIVE), "token_count": token_count,
            "oov_share": tf.cast(unknown, tf.float32)
                         / tf.cast(tf.maximum(token_count, 1), tf.float32)}

  def __call__(self, reviews):
    """Classifies raw reviews (string[batch], UTF-8; invalid bytes are replaced): `classify`."""
    return self.classify(text.encode(reviews, self.table))


def build_classifier(config, weights, vocabulary):
  """A float32, single-device copy of the trained model behind the raw-text function.

  Args:
    config: the `config.Config` the model was trained with.
    weights: the weights to serve, in `model.get_weights()` order (e.g. the moving averages).
    vocabulary: list of tokens, index = id, the one the training data was prepared with.
  """
  with _float32_policy():
    model = model_lib.build_model(config)
  model.set_weights(weights)
  return RawTextClassifier(model, vocabulary, config)


def export(classifier, destination, metadata, versioned=True):
  """Writes `classifier` as a SavedModel, atomically.

  Args:
    classifier: a `RawTextClassifier`; its vocabulary is written beside it as `vocab.txt`.
    destination: local folder or URI.
    metadata: JSON-able facts to judge the export by (metrics, config, data...).
    versioned: write into a new `<destination>/<version>` folder (what TF Serving watches);
      else into `destination` itself (what Vertex AI's AIP_MODEL_DIR expects), replacing it.

  Returns:
    The path of the export.
  """
  version = _new_version(destination) if versioned else str(int(time.time()))
  path = storage.join(destination, version) if versioned else destination
  metadata = dict(metadata, format=EXPORT_FORMAT, format_version=FORMAT_VERSION,
                  version=version, signature=SIGNATURE, export_id=uuid.uuid4().hex,
                  created=datetime.datetime.now(datetime.timezone.utc).isoformat(
                      timespec="seconds"))
  if "://" in path:
    with tempfile.TemporaryDirectory(prefix="imdb_export_") as local:
      _write_export(classifier, metadata, local)
      _copy_tree_with_saved_model_last(local, path)
    return path
  tf.io.gfile.makedirs(os.path.dirname(os.path.abspath(path)))
  with storage.atomic_path(path) as temporary_path:  # Unversioned, it replaces the old export.
    _write_export(classifier, metadata, temporary_path)
  return path


def _new_version(export_root):
  """A version name after every existing one: the current time in seconds, or one more."""
  return str(max([int(time.time())] + [number + 1 for number in _versions(export_root)]))


def _versions(export_root):
  """The version numbers of the exports in `export_root` (none when it does not exist)."""
  names = tf.io.gfile.listdir(export_root) if tf.io.gfile.isdir(export_root) else []
  return [int(name.rstrip("/")) for name in names if name.rstrip("/").isdigit()]


def _write_export(classifier, metadata, path):
  """Writes the SavedModel, the vocabulary and the metadata into the new folder `path`."""
  archive = keras.export.ExportArchive()
  archive.track(classifier.model)
  archive.track(classifier.table)
  reviews = [tf.TensorSpec([None], tf.string, name="reviews")]
  archive.add_endpoint(SIGNATURE, classifier, input_signature=reviews)
  archive.add_endpoint(TOKEN_IDS_SIGNATURE, classifier.token_ids, input_signature=reviews)
  archive.write_out(path, verbose=False)
  warmup.write(path, SIGNATURE)
  text.save_vocabulary(classifier.vocabulary, storage.join(path, VOCAB_FILE))
  storage.write_json_atomically(storage.join(path, METADATA_FILE), metadata)


def _copy_tree_with_saved_model_last(source, destination):
  """Copies a local export to a URI; `saved_model.pb`, what marks it loadable, goes last."""
  for name in storage.relative_files(source, last=SAVED_MODEL_FILE):
    target = storage.join(destination, name)
    tf.io.gfile.makedirs(os.path.dirname(target))
    tf.io.gfile.copy(os.path.join(source, *name.split("/")), target, overwrite=True)


def load_metadata(path):
  """The metadata of the export at `path`, after checking it is an export of this project.

  Raises:
    UserInputError: naming what is missing and what to pass instead.
  """
  metadata_path = storage.join(path, METADATA_FILE)
  if not tf.io.gfile.exists(storage.join(path, SAVED_MODEL_FILE)):
    raise UserInputError(
        f"{path} is not a SavedModel (no {SAVED_MODEL_FILE}). Pass a version folder of an "
        "export, e.g. <workdir>/export/<version>, written by python -m trainer.train.")
  if not tf.io.gfile.exists(metadata_path):
    raise UserInputError(
        f"{path} is a SavedModel but not an export of this project (no {METADATA_FILE}). "
        "Export a model with python -m trainer.train.")
  with tf.io.gfile.GFile(metadata_path, "rb") as f:
    return parse_metadata(f.read(), metadata_path)


def parse_metadata(data, location):
  """The export metadata in `data`, the bytes of the file at `location`, once checked.

  Raises:
    UserInputError: unless it is the metadata of an export of this project, of this format
      version, with a version that names a folder.
  """
  metadata = storage.parse_json_object(data, location, METADATA_FIX)
  if metadata.get("format") != EXPORT_FORMAT:
    raise UserInputError(f"{location}: format {metadata.get('format')!r} is not "
                         f"{EXPORT_FORMAT!r}: {METADATA_FIX}")
  if metadata.get("format_version") not in READABLE_FORMAT_VERSIONS:
    raise UserInputError(f"{location}: format_version {metadata.get('format_version')!r} is not "
                         f"one of {READABLE_FORMAT_VERSIONS}; use code of the same version as the "
                         "training that exported it.")
  if not _VERSION_PATTERN.fullmatch(str(metadata.get("version", ""))):
    raise UserInputError(f"{location}: version {metadata.get('version')!r} is missing or not a "
                         f"folder name (letters, digits, '.', '_', '-'): {METADATA_FIX}")
  return metadata


def latest_export(export_root):
  """The newest version folder under `export_root`, or None."""
  versions = _versions(export_root)
  return storage.join(export_root, str(max(versions))) if versions else None


def resolve_export(path):
  """The export `path` names: itself, the newest version under it, or under its export/ (a
  training workdir)."""
  return latest_export(path) or latest_export(storage.join(path, "export")) or path
