"""The distribution strategy, and which process is the chief: the only module reading TF_CONFIG.

Create the strategy first thing in a process: MultiWorkerMirroredStrategy must exist before
TensorFlow runs any op.
"""

import json
import os

from absl import logging
import tensorflow as tf

from trainer.errors import UserInputError

STRATEGY_CHOICES = ("auto", "default", "one_device", "mirrored", "multi_worker")


def cluster_config():
  """The parsed TF_CONFIG ({"cluster": ..., "task": ...}), or None when it is not set."""
  raw = os.environ.get("TF_CONFIG")
  if not raw:
    return None
  try:
    config = json.loads(raw)
  except json.JSONDecodeError as e:
    raise UserInputError(f"TF_CONFIG is not valid JSON ({e}): {raw[:200]}") from e
  if "cluster" not in config or "task" not in config:
    raise UserInputError(f'TF_CONFIG needs "cluster" and "task" keys, got {sorted(config)}.')
  return config


def _num_workers(config):
  """Workers and chief in a TF_CONFIG cluster (parameter servers and evaluators excluded)."""
  if not config:
    return 1
  return sum(len(config["cluster"].get(role, [])) for role in ("chief", "worker"))


def build_strategy(name="auto"):
  """Creates the strategy named by --strategy.

  Args:
    name: "auto" (several workers in TF_CONFIG -> multi_worker; several GPUs -> mirrored; else
      one_device), "default", "one_device", "mirrored" or "multi_worker".

  Returns:
    A `tf.distribute.Strategy`.
  """
  if name not in STRATEGY_CHOICES:
    raise UserInputError(f"--strategy={name}: choose one of {STRATEGY_CHOICES}.")
  if name == "auto":
    gpus = tf.config.list_physical_devices("GPU")
    if _num_workers(cluster_config()) > 1:
      name = "multi_worker"
    else:
      name = "mirrored" if len(gpus) > 1 else "one_device"
  if name == "multi_worker":
    strategy = tf.distribute.MultiWorkerMirroredStrategy()
  elif name == "mirrored":
    strategy = tf.distribute.MirroredStrategy()
  elif name == "one_device":
    strategy = tf.distribute.OneDeviceStrategy(
        "/gpu:0" if tf.config.list_physical_devices("GPU") else "/cpu:0")
  else:
    strategy = tf.distribute.get_strategy()
  logging.info("Strategy: %s with %d replicas in sync (%s).", name,
               strategy.num_replicas_in_sync, type(strategy).__name__)
  return strategy


def task(strategy):
  """(task_type, task_id) of this process; ("chief", 0) outside a multi-worker cluster."""
  resolver = getattr(strategy, "cluster_resolver", None)
  if resolver is None or not resolver.task_type:
    return "chief", 0
  return resolver.task_type, resolver.task_id


def is_chief(strategy):
  """Whether this process writes checkpoints, summaries and results.

  The chief is the "chief" task, or worker 0 when the cluster has no "chief" entry.
  """
  task_type, task_id = task(strategy)
  if task_type == "chief":
    return True
  cluster = strategy.cluster_resolver.cluster_spec().as_dict()
  return task_type == "worker" and task_id == 0 and "chief" not in cluster


def num_workers(strategy):
  """Number of worker processes taking part in training."""
  resolver = getattr(strategy, "cluster_resolver", None)
  if resolver is None or not resolver.task_type:
    return 1
  return _num_workers({"cluster": resolver.cluster_spec().as_dict()})
