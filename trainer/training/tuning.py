"""Reporting the tuned metric to a Vertex AI hyperparameter-tuning job."""

import os

import hypertune

TRIAL_ID = "CLOUD_ML_TRIAL_ID"


def is_tuning_trial():
  """Whether this job runs as a trial of a Vertex hyperparameter-tuning job."""
  return bool(os.environ.get(TRIAL_ID))


def report_tuning_metric(tag, value, step):
  """Reports the tuned metric to Vertex (cloudml-hypertune); call it on the chief only."""
  hypertune.HyperTune().report_hyperparameter_tuning_metric(
      hyperparameter_metric_tag=tag, metric_value=value, global_step=step)
