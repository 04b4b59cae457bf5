"""Where a run writes its outputs, including where Vertex AI expects them.

A Vertex AI custom job sets `AIP_MODEL_DIR`, `AIP_CHECKPOINT_DIR` and `AIP_TENSORBOARD_LOG_DIR`
(under the job's base output directory, and under `<base>/<trial id>/` for each trial of a
hyperparameter-tuning job); when they are set, outputs go there. Elsewhere they go under the
workdir. This is the only module that reads those variables.
"""

import dataclasses
import os

import hypertune

from trainer import storage

MODEL_DIR = "AIP_MODEL_DIR"
CHECKPOINT_DIR = "AIP_CHECKPOINT_DIR"
TENSORBOARD_DIR = "AIP_TENSORBOARD_LOG_DIR"
TRIAL_ID = "CLOUD_ML_TRIAL_ID"


@dataclasses.dataclass(frozen=True)
class OutputLocations:
  """The folders (local or URIs) a run writes to."""
  workdir: str  # config.json, metrics.json, and the defaults below.
  checkpoints: str
  tensorboard: str
  export: str  # Where the SavedModel goes.
  versioned_export: bool  # Export into a new <version> folder (TF Serving) or into `export`.


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


def is_tuning_trial():
  """Whether this job runs as a trial of a Vertex hyperparameter-tuning job."""
  return bool(os.environ.get(TRIAL_ID))


def report_tuning_metric(tag, value, step):
  """Reports the tuned metric to Vertex (cloudml-hypertune); call it on the chief only."""
  hypertune.HyperTune().report_hyperparameter_tuning_metric(
      hyperparameter_metric_tag=tag, metric_value=value, global_step=step)
