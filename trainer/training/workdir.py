"""What a run keeps in its workdir: where outputs go, the run record, and the resume check.

A Vertex AI custom job sets `AIP_MODEL_DIR`, `AIP_CHECKPOINT_DIR` and `AIP_TENSORBOARD_LOG_DIR`
(under the job's base output directory, and under `<base>/<trial id>/` for each trial of a
hyperparameter-tuning job); when they are set, outputs go there. Elsewhere they go under the
workdir. This is the only module that reads those variables.
"""

import dataclasses
import hashlib
import json
import os
import platform

import keras
import numpy as np
import tensorflow as tf

from trainer import config as config_lib
from trainer.data import sources
from trainer import errors
from trainer.errors import UserInputError
from trainer import storage

MODEL_DIR = "AIP_MODEL_DIR"
CHECKPOINT_DIR = "AIP_CHECKPOINT_DIR"
TENSORBOARD_DIR = "AIP_TENSORBOARD_LOG_DIR"
RUN_RECORD_FILE = "config.json"
METRICS_FILE = "metrics.json"
STARTS_FILE = "starts.json"  # The steps the run started training at, oldest first.


@dataclasses.dataclass(frozen=True)
class OutputLocations:
  """The folders (local or URIs) a run writes to."""
  workdir: str  # config.json, metrics.json, and the defaults below.
  checkpoints: str
  tensorboard: str
  export: str  # Where the SavedModel goes.
  versioned_export: bool  # Export into a new <version> folder (TF Serving) or into `export`.

  def file(self, name):
    """The path of a file of the workdir."""
    return storage.join(self.workdir, name)


def default_workdir():
  """The workdir Vertex implies (the parent of AIP_MODEL_DIR: the job's or trial's folder)."""
  model_dir = os.environ.get(MODEL_DIR)
  return model_dir.rstrip("/").rsplit("/", 1)[0] if model_dir else None


def output_locations(workdir):
  """The run's folders: Vertex's when its variables are set, else under `workdir`."""
  model_dir = os.environ.get(MODEL_DIR)
  return OutputLocations(
      workdir=workdir,
      checkpoints=os.environ.get(CHECKPOINT_DIR) or storage.join(workdir, "checkpoints"),
      tensorboard=os.environ.get(TENSORBOARD_DIR) or storage.join(workdir, "tensorboard"),
      export=model_dir or storage.join(workdir, "export"),
      versioned_export=not model_dir)


def versions():
  """Versions of what produced a result."""
  return {"python": platform.python_version(), "tensorflow": tf.__version__,
          "keras": keras.__version__, "numpy": np.__version__}


def weights_sha256(model):
  """Checksum of every weight, to compare replicas, workers and runs."""
  digest = hashlib.sha256()
  for weight in model.weights:
    digest.update(np.ascontiguousarray(weight.numpy()).tobytes())
  return digest.hexdigest()


def data_identity(data_dir, metadata):
  """What a checkpoint's weights depend on in the data: the vocabulary."""
  vocab_path = storage.join(data_dir, metadata["vocab_file"])
  return {"data_dir": data_dir, "fingerprint": metadata["fingerprint"],
          "source": metadata["source"], "vocab_size": metadata["vocab_size"],
          "vocab_sha256": sources.sha256_of_file(vocab_path)}


def run_record(config, data, **facts):
  """The record of a run's settings written to config.json (JSON-normalized)."""
  record = {"config": dataclasses.asdict(config), "result_identity": config.result_identity(),
            "data": data, "versions": versions(), **facts}
  return json.loads(json.dumps(record))


def run_record_of(locations):
  """The run record (config.json) of the run at `locations`, or None when there is none yet."""
  path = locations.file(RUN_RECORD_FILE)
  return storage.read_json(path) if tf.io.gfile.exists(path) else None


def _flat_identity(config):
  """{"section.field": value} of a config's result identity, JSON-normalized."""
  return config_lib.flattened(json.loads(json.dumps(config.result_identity())))


def check_resumable(locations, config, data):
  """Refuses to resume a run whose config or vocabulary differ from this one's.

  A field the run's record lacks (added to the config since) counts as its default.
  """
  record = run_record_of(locations)
  if record is None:
    return
  old = {**_flat_identity(config_lib.Config()),
         **config_lib.flattened(record.get("result_identity", {}))}
  new = _flat_identity(config)
  changed = sorted(key for key in new if old.get(key) != new[key])
  if changed:
    raise UserInputError(
        f"The checkpoints in this --workdir were trained with other values of {changed} "
        f"({ {key: old.get(key) for key in changed} }). Use a new --workdir, or the same "
        "settings to resume.")
  old_data = record.get("data") or {}
  if data and old_data.get("vocab_sha256") != data["vocab_sha256"]:
    raise UserInputError(
        f"The checkpoints in this --workdir were trained with the vocabulary of "
        f"{old_data.get('data_dir')} (size {old_data.get('vocab_size')}), and "
        f"{data['data_dir']} has another (size {data['vocab_size']}): the embedding rows would "
        "mean other words. Use the original --data_dir, or a new --workdir.")


def record_start(locations, step, limit):
  """Notes that the run starts training at `step`; stops a run that does not get anywhere.

  A job that loses a worker or its storage again and again is restarted again and again (exit
  42 is not counted against a Job's backoffLimit): once `limit` starts in a row began at the
  same checkpoint, with no new one saved in between, the run stops for good with exit 2.

  Raises:
    errors.NoProgress: at the start after `limit` such starts (never with `limit` 0).
  """
  path = locations.file(STARTS_FILE)
  starts = storage.read_json(path)["steps"] if tf.io.gfile.exists(path) else []
  same = 0  # Starts right before this one at the same step.
  for previous in reversed(starts):
    if previous != step:
      break
    same += 1
  if limit and same >= limit:
    raise errors.NoProgress(
        f"This run has started {same} times in a row at step {step} without saving a new "
        f"checkpoint (--max_restarts_without_progress={limit}): something stops it every time "
        "(the logs of every worker say what: a lost worker, unavailable storage, a crash). It "
        f"stops for good (exit {errors.USER_ERROR_EXIT_CODE}). Fix the cause, then delete "
        f"{path} to try again.")
  storage.write_json_atomically(path, {"steps": starts[-max(limit, 1) * 2:] + [step]})


def previous_results(locations):
  """The metrics.json of an earlier segment of this run, or {}."""
  path = locations.file(METRICS_FILE)
  return storage.read_json(path) if tf.io.gfile.exists(path) else {}

