r"""Promotes an exported model to production only if its test accuracy is better.

  python -m trainer.promote --candidate=/tmp/imdb_run/export/1795903751 \
      --production=gs://my-bucket/imdb/production [--min_improvement=0.005]

The candidate is an export (local or gs://): a SavedModel with `export_metadata.json`. It is
promoted when there is no production model yet, or when its test accuracy beats production's by
at least `--min_improvement`. Production (local or gs://, the same layout on both) holds:

  models/<model id>/   a full copy of every promoted export, kept forever
  CURRENT.json         the pointer to the production model, switched in one step
  decisions/<time>-<random>.json   one record per decision, promoted or refused

The copy is complete before the pointer switches. The switch is a compare-and-swap (an fcntl lock
and os.replace locally, a generation precondition on GCS), so of two concurrent promotions only
one wins; the other reads the new production model and decides again. The decision is printed
as one JSON line; the exit code is 0 whether the candidate was promoted or refused.
"""

import contextlib
import dataclasses
import datetime
import fcntl
import json
import math
import os
import re
import shutil
import tempfile
import uuid

from absl import flags
from absl import logging
from google.api_core import exceptions as gcs_exceptions
import google.auth.exceptions
from google.cloud import storage as gcs

from trainer import errors
from trainer import export
from trainer import storage
from trainer.errors import UserInputError

POINTER_FORMAT = "imdb-bilstm-production"
POINTER_FORMAT_VERSION = 1
POINTER_FILE = "CURRENT.json"
MODELS_DIR = "models"
DECISIONS_DIR = "decisions"
LOCK_FILE = ".promote.lock"

# Accuracies are fractions of one test set: differences this small are float rounding.
_TOLERANCE = 1e-9
_VERSION_PATTERN = re.compile(r"[A-Za-z0-9._-]+")  # An export version names a folder.


# --- Storage: one small interface, a local and a GCS backend.


class _LocalStore:
  """A local folder; the pointer is compared and swapped under an exclusive fcntl lock."""

  def __init__(self, root):
    """Opens the folder `root` (created on first write)."""
    self._root = os.path.abspath(root)
    if os.path.exists(self._root) and not os.path.isdir(self._root):
      raise UserInputError(f"{self._root} is a file: pass a directory.")

  def location(self, name=""):
    """The path of `name` (a "/"-separated name relative to the root)."""
    return os.path.join(self._root, *name.split("/")) if name else self._root

  def list_files(self, under=""):
    """Names of all files under the folder `under`, relative to the root, in sorted order."""
    names = []
    for directory, _, files in os.walk(self.location(under)):
      relative = os.path.relpath(directory, self._root).replace(os.sep, "/")
      names.extend(name if relative == "." else f"{relative}/{name}" for name in files)
    return sorted(names)

  def read_versioned(self, name):
    """The bytes of `name` (None if missing) and a token for `replace_if`: the bytes again."""
    try:
      with open(self.location(name), "rb") as f:
        data = f.read()
    except FileNotFoundError:
      data = None
    return data, data

  def replace_if(self, name, data, token):
    """Writes `data` to `name` if it still holds what `read_versioned` saw; whether it did."""
    os.makedirs(self._root, exist_ok=True)
    with open(self.location(LOCK_FILE), "a") as lock:
      fcntl.flock(lock, fcntl.LOCK_EX)  # Released when the file closes.
      if self.read_versioned(name)[1] != token:
        return False
      self._write_atomically(name, data)
      return True

  def write_new(self, name, data):
    """Creates the file `name` (a new, unique name) holding `data`."""
    self._write_atomically(name, data)

  def _write_atomically(self, name, data):
    """Writes `data` to `name` under a temporary name, synced, then renamed into place."""
    path = self.location(name)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    temporary_path = storage.temporary_name(path)
    with open(temporary_path, "wb") as f:
      f.write(data)
      f.flush()
      os.fsync(f.fileno())
    os.replace(temporary_path, path)

  def put_tree(self, local_dir, name):
    """Copies the local folder `local_dir` to `name`, which appears complete or not at all."""
    path = self.location(name)
    temporary_path = storage.temporary_name(path)
    try:
      shutil.copytree(local_dir, temporary_path, copy_function=_copy_and_sync)
      os.rename(temporary_path, path)
    finally:
      if os.path.exists(temporary_path):
        shutil.rmtree(temporary_path)

  def delete_tree(self, name):
    """Deletes the folder `name` if it exists."""
    if os.path.exists(self.location(name)):
      shutil.rmtree(self.location(name))

  @contextlib.contextmanager
  def local_copy(self):
    """Yields a local folder holding the files of this store: the folder itself."""
    yield self._root


def _copy_and_sync(source, destination):
  """Copies a file with its metadata and flushes it to disk before it is renamed into place."""
  shutil.copy2(source, destination)
  with open(destination, "rb+") as f:
    os.fsync(f.fileno())


class _GcsStore:
  """Objects under gs://bucket/prefix; the pointer is swapped with a generation precondition."""

  def __init__(self, url, client):
    """Opens `url` (gs://bucket or gs://bucket/prefix) through a google.cloud.storage client."""
    bucket_name, _, prefix = url[len("gs://"):].partition("/")
    if not bucket_name:
      raise UserInputError(f"{url}: name a bucket, as in gs://bucket/prefix.")
    self._client = client
    self._bucket = client.bucket(bucket_name)
    self._prefix = prefix.strip("/")
    self._url = f"gs://{bucket_name}/{self._prefix}" if self._prefix else f"gs://{bucket_name}"

  def location(self, name=""):
    """The gs:// URL of `name` (a "/"-separated name relative to the root)."""
    return storage.join(self._url, name) if name else self._url

  def _object_name(self, name):
    """The object name of `name`."""
    return f"{self._prefix}/{name}" if self._prefix else name

  def _blob(self, name):
    """The blob of `name`."""
    return self._bucket.blob(self._object_name(name))

  def list_files(self, under=""):
    """Names of all objects under the folder `under`, relative to the root, in sorted order."""
    root = f"{self._prefix}/" if self._prefix else ""
    prefix = f"{root}{under}/" if under else root
    return sorted(blob.name[len(root):] for blob in self._client.list_blobs(self._bucket,
                                                                            prefix=prefix)
                  if not blob.name.endswith("/"))

  def read_versioned(self, name):
    """The bytes of `name` (None if missing) and their generation (0 if missing)."""
    while True:  # Until the generation and the bytes come from one version of the object.
      blob = self._bucket.get_blob(self._object_name(name))
      if blob is None:
        return None, 0
      generation = blob.generation  # A download may reset it from a response header.
      try:
        return blob.download_as_bytes(if_generation_match=generation), generation
      except (gcs_exceptions.NotFound, gcs_exceptions.PreconditionFailed):
        logging.info("%s changed while it was read; reading it again.", self.location(name))

  def replace_if(self, name, data, token):
    """Writes `data` to `name` if its generation is still `token`; whether it did."""
    try:
      # No automatic retry: a retried write that had succeeded would fail its precondition.
      self._blob(name).upload_from_string(data, content_type="application/json",
                                          if_generation_match=token, retry=None)
    except gcs_exceptions.PreconditionFailed:
      return False
    return True

  def write_new(self, name, data):
    """Creates the object `name` holding `data`; an existing object is never overwritten."""
    self._blob(name).upload_from_string(data, content_type="application/json",
                                        if_generation_match=0)

  def put_tree(self, local_dir, name):
    """Uploads every file of the local folder `local_dir` under `name`."""
    for directory, _, files in os.walk(local_dir):
      for file_name in files:
        path = os.path.join(directory, file_name)
        relative = os.path.relpath(path, local_dir).replace(os.sep, "/")
        self._blob(f"{name}/{relative}").upload_from_filename(path, if_generation_match=0)

  def delete_tree(self, name):
    """Deletes every object under the folder `name`."""
    for relative in self.list_files(name):
      self._blob(relative).delete()

  @contextlib.contextmanager
  def local_copy(self):
    """Yields a temporary local folder holding a download of every object of this store."""
    with tempfile.TemporaryDirectory() as local_dir:
      for name in self.list_files():
        path = os.path.join(local_dir, *name.split("/"))
        os.makedirs(os.path.dirname(path), exist_ok=True)
        self._blob(name).download_to_filename(path)
      yield local_dir


def _default_gcs_client():
  """A google.cloud.storage client from the environment (honours STORAGE_EMULATOR_HOST)."""
  try:
    return gcs.Client()
  except google.auth.exceptions.DefaultCredentialsError as e:
    raise UserInputError(f"No Google Cloud credentials for gs:// paths ({e}); run `gcloud auth "
                         "application-default login` or set GOOGLE_APPLICATION_CREDENTIALS.")


def _open_store(location, gcs_client):
  """The store of a local path or gs:// URL."""
  if location.startswith("gs://"):
    return _GcsStore(location, gcs_client or _default_gcs_client())
  if "://" in location:
    raise UserInputError(f"{location}: use a local path or gs://bucket/prefix.")
  return _LocalStore(location)


# --- The candidate and the production pointer.


def _accuracy(value):
  """`value` if it is a valid accuracy (a number in [0, 1]), else None."""
  is_number = isinstance(value, (int, float)) and not isinstance(value, bool)
  return float(value) if is_number and math.isfinite(value) and 0 <= value <= 1 else None


def _parse_json_object(data, location, fix):
  """The JSON object in `data`, read from `location`; `fix` ends the error if it is not one."""
  try:
    value = json.loads(data)
  except ValueError as e:
    raise UserInputError(f"{location} is not valid JSON ({e}): {fix}") from e
  if not isinstance(value, dict):
    raise UserInputError(f"{location} holds no JSON object: {fix}")
  return value


def _read_export(store):
  """Checks that `store` holds an export of this project and returns its metadata."""
  where = store.location()
  files = store.list_files()
  if not files:
    raise UserInputError(f"Candidate {where}: nothing is there; pass an export directory (it "
                         f"holds {export.METADATA_FILE} and {export.SAVED_MODEL_FILE}).")
  if export.METADATA_FILE not in files:
    raise UserInputError(f"Candidate {where} is not an export of this project: it has no "
                         f"{export.METADATA_FILE}; pass the directory that training exported.")
  if export.SAVED_MODEL_FILE not in files:
    raise UserInputError(f"Candidate {where} has no {export.SAVED_MODEL_FILE}: the export is "
                         "incomplete; export the model again.")
  location = store.location(export.METADATA_FILE)
  fix = "it is not the metadata of an imdb-bilstm export; export the model again."
  data, _ = store.read_versioned(export.METADATA_FILE)
  metadata = _parse_json_object(data, location, fix)
  if metadata.get("format") != export.EXPORT_FORMAT:
    raise UserInputError(f"{location}: format {metadata.get('format')!r} is not "
                         f"{export.EXPORT_FORMAT!r}: {fix}")
  if metadata.get("format_version") != export.FORMAT_VERSION:
    raise UserInputError(f"{location}: format_version {metadata.get('format_version')!r} is not "
                         f"{export.FORMAT_VERSION}; use a promote of the same code version as "
                         "the training that exported it.")
  if not _VERSION_PATTERN.fullmatch(str(metadata.get("version", ""))):
    raise UserInputError(f"{location}: version {metadata.get('version')!r} is missing or not a "
                         f"folder name (letters, digits, '.', '_', '-'): {fix}")
  test_metrics = metadata.get("test")
  if not isinstance(test_metrics, dict) or _accuracy(test_metrics.get("accuracy")) is None:
    raise UserInputError(f"{location}: no test accuracy in [0, 1] at test.accuracy: {fix}")
  return metadata


def _read_production(store):
  """The production pointer (None before the first promotion) and its compare-and-swap token."""
  data, token = store.read_versioned(POINTER_FILE)
  if data is None:
    return None, token
  location = store.location(POINTER_FILE)
  fix = (f"the pointer is corrupt; rewrite it from the last promoted record in "
         f"{store.location(DECISIONS_DIR)}, or delete it to promote the next candidate "
         "unconditionally.")
  pointer = _parse_json_object(data, location, fix)
  if not isinstance(pointer.get("model_id"), str) or not pointer["model_id"]:
    raise UserInputError(f"{location} names no model_id: {fix}")
  if _accuracy(pointer.get("test_accuracy")) is None:
    raise UserInputError(f"{location} has no test_accuracy in [0, 1]: {fix}")
  return pointer, token


# --- Deciding and promoting.


def _judge(candidate_accuracy, production, min_improvement):
  """Whether the candidate replaces `production` (a pointer, or None), and why."""
  if production is None:
    return True, "no production model yet"
  production_accuracy = production["test_accuracy"]
  improvement = candidate_accuracy - production_accuracy
  versus = (f"test accuracy {candidate_accuracy:.6g} vs production's {production_accuracy:.6g} "
            f"(model {production['model_id']})")
  if improvement <= _TOLERANCE:
    return False, f"{versus}: not better"
  if improvement < min_improvement - _TOLERANCE:
    return False, (f"{versus}: better by {improvement:.6g}, less than min_improvement "
                   f"{min_improvement:.6g}")
  return True, f"{versus}: better by {improvement:.6g} (min_improvement {min_improvement:.6g})"


def _now():
  """The current UTC time."""
  return datetime.datetime.now(datetime.timezone.utc)


def _timestamp(time):
  """`time` in ISO 8601 with microseconds and Z."""
  return time.strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _check_min_improvement(min_improvement):
  """Raises UserInputError unless `min_improvement` is a number >= 0."""
  if not (isinstance(min_improvement, (int, float)) and math.isfinite(min_improvement)
          and min_improvement >= 0):
    raise UserInputError(f"--min_improvement={min_improvement}: use a number >= 0, such as 0.005 "
                         "(an accuracy difference).")


def _check_apart(source, target):
  """Raises UserInputError if production is the candidate folder or inside it."""
  candidate, production = source.location(), target.location()
  if production == candidate or production.startswith(candidate.rstrip("/") + "/"):
    raise UserInputError(f"Production {production} is inside the candidate {candidate}: keep "
                         "production in a folder of its own.")


@dataclasses.dataclass(frozen=True)
class _Outcome:
  """How a promotion ended."""
  promoted: bool
  reason: str
  production: dict | None  # The pointer judged against last; None if there was none.
  model_id: str | None  # The promoted model; None if refused.
  lost_races: int  # Switches that failed because another promotion switched first.


def _decide_and_switch(source, target, metadata, min_improvement):
  """Judges the candidate against production and, if it wins, copies it and switches to it."""
  accuracy = _accuracy(metadata["test"]["accuracy"])
  model_id, lost_races = None, 0
  # Each lost race is a promotion by someone else, whose model then has to be beaten: this ends.
  while True:
    current, token = _read_production(target)
    promoted, reason = _judge(accuracy, current, min_improvement)
    if not promoted:
      if model_id is not None:
        target.delete_tree(f"{MODELS_DIR}/{model_id}")  # Only this call knew it: never pointed to.
      return _Outcome(False, reason, current, None, lost_races)
    if model_id is None:
      model_id = f"{metadata['version']}-{uuid.uuid4().hex[:8]}"
      _copy_export(source, target, f"{MODELS_DIR}/{model_id}")
    pointer = {"format": POINTER_FORMAT, "format_version": POINTER_FORMAT_VERSION,
               "model_id": model_id, "path": target.location(f"{MODELS_DIR}/{model_id}"),
               "test_accuracy": accuracy, "promoted_at": _timestamp(_now()),
               "candidate": source.location(), "candidate_version": metadata["version"]}
    if target.replace_if(POINTER_FILE, storage.json_text(pointer).encode(), token):
      return _Outcome(True, reason, current, model_id, lost_races)
    lost_races += 1
    logging.info("Production changed during the promotion (race %d lost); deciding again.",
                 lost_races)


def _copy_export(source, target, name):
  """Copies every file of the export in `source` to the folder `name` of `target`."""
  logging.info("Copying %s to %s.", source.location(), target.location(name))
  with source.local_copy() as local_dir:
    try:
      target.put_tree(local_dir, name)
    except BaseException:
      target.delete_tree(name)  # A partial copy that nothing points to.
      raise


def promote(candidate, production, min_improvement=0.0, *, gcs_client=None):
  """Promotes the export `candidate` to `production` if it is better; logs the decision.

  Args:
    candidate: an export folder, a local path or gs://bucket/prefix.
    production: the production folder, a local path or gs://bucket/prefix (created if missing).
    min_improvement: the least test-accuracy gain over production that promotes (>= 0).
    gcs_client: a google.cloud.storage.Client for gs:// paths; by default one from the
      environment.

  Returns:
    The decision record, as logged under <production>/decisions/.
  """
  _check_min_improvement(min_improvement)
  if gcs_client is None and any(path.startswith("gs://") for path in (candidate, production)):
    gcs_client = _default_gcs_client()
  source = _open_store(candidate, gcs_client)
  target = _open_store(production, gcs_client)
  _check_apart(source, target)
  metadata = _read_export(source)
  outcome = _decide_and_switch(source, target, metadata, min_improvement)
  time = _now()
  log_name = f"{DECISIONS_DIR}/{time:%Y%m%dT%H%M%S%fZ}-{uuid.uuid4().hex[:8]}.json"
  model_path = target.location(f"{MODELS_DIR}/{outcome.model_id}") if outcome.promoted else None
  judged_against = outcome.production or {}
  record = {
      "time": _timestamp(time), "promoted": outcome.promoted, "reason": outcome.reason,
      "candidate": source.location(), "candidate_version": metadata["version"],
      "candidate_test_accuracy": _accuracy(metadata["test"]["accuracy"]),
      "production": target.location(),
      "production_model_id": judged_against.get("model_id"),
      "production_test_accuracy": judged_against.get("test_accuracy"),
      "min_improvement": min_improvement, "lost_races": outcome.lost_races,
      "model_id": outcome.model_id, "model_path": model_path, "log": target.location(log_name),
  }
  target.write_new(log_name, storage.json_text(record).encode())
  return record


# --- Command line.

FLAGS = flags.FLAGS


def define_flags():
  """Defines the command-line flags of promote."""
  flags.DEFINE_string("candidate", None, "Export folder to promote (local or gs://).")
  flags.DEFINE_string("production", None, "Production folder (local or gs://).")
  flags.DEFINE_float("min_improvement", 0.0, "Least test-accuracy gain over production that "
                     "promotes, e.g. 0.005.")
  flags.mark_flags_as_required(["candidate", "production"])


def main(argv):
  """Promotes or refuses the candidate and prints the decision as one JSON line."""
  if len(argv) > 1:
    raise UserInputError(f"Unexpected arguments {argv[1:]}; every option is a --flag.")
  record = promote(FLAGS.candidate, FLAGS.production, FLAGS.min_improvement)
  print(json.dumps(record, sort_keys=True), flush=True)


if __name__ == "__main__":
  define_flags()
  errors.run(main)
