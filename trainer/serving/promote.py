"""Promotes an exported model to production only if its test accuracy is better.

The candidate is an export (local or gs://): a SavedModel with `export_metadata.json`. It is
promoted when there is no production model yet, or when its test accuracy beats production's by
at least `--min_improvement`. Production (local or gs://, the same layout on both) holds:

  models/<model id>/   a full copy of every promoted export, kept forever
  CURRENT.json         the pointer to the production model, switched in one step
  decisions/<time>-<random>.json   one record per decision, promoted or refused

The copy is complete before the pointer switches. The switch is a compare-and-swap (an fcntl lock
and os.replace locally, a generation precondition on GCS), so of two concurrent promotions only
one wins; the other reads the new production model and decides again.
"""

import dataclasses
import datetime
import math
import uuid

from absl import logging

from trainer.errors import UserInputError
from trainer.serving import export
from trainer import storage

POINTER_FORMAT = "imdb-bilstm-production"
POINTER_FORMAT_VERSION = 1
POINTER_FILE = "CURRENT.json"
MODELS_DIR = "models"
DECISIONS_DIR = "decisions"

# Accuracies are fractions of one test set: differences this small are float rounding.
_TOLERANCE = 1e-9


# --- The candidate and the production pointer.


def _accuracy(value):
  """`value` if it is a valid accuracy (a number in [0, 1]), else None."""
  is_number = isinstance(value, (int, float)) and not isinstance(value, bool)
  return float(value) if is_number and math.isfinite(value) and 0 <= value <= 1 else None


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
  metadata = export.parse_metadata(store.read_versioned(export.METADATA_FILE)[0], location)
  test_metrics = metadata.get("test")
  if not isinstance(test_metrics, dict) or _accuracy(test_metrics.get("accuracy")) is None:
    raise UserInputError(f"{location}: no test accuracy in [0, 1] at test.accuracy: "
                         f"{export.METADATA_FIX}")
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
  pointer = storage.parse_json_object(data, location, fix)
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
    gcs_client = storage.default_gcs_client()
  source = storage.open_store(candidate, gcs_client)
  target = storage.open_store(production, gcs_client)
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
