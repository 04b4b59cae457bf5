"""The distribution strategy of a process, and which process is the chief.

Create the strategy first thing in a process: MultiWorkerMirroredStrategy must exist before
TensorFlow runs any op.
"""

import json
import os

from absl import logging
import tensorflow as tf

from trainer.cluster import gpus
from trainer.cluster import peers
from trainer.cluster import resolve
from trainer.cluster import threads
from trainer.config import STRATEGY_CHOICES
from trainer import errors
from trainer.errors import UserInputError


def build_strategy(name="auto", options=resolve.ClusterOptions(), trained=False):
  """Creates the strategy named by --strategy, after waiting for the peers of a cluster.

  First it sizes TensorFlow's thread pools from the container's CPU limit (`threads`).

  Args:
    name: "auto" (a cluster of several workers -> multi_worker; several GPUs -> mirrored; else
      one_device), "default", "one_device", "mirrored" or "multi_worker".
    options: the cluster given by flags (`ClusterOptions`), how long to wait for it, and the
      GPUs that must be visible.
    trained: the run has its final checkpoint already, so what is left (test, export, promote)
      needs no cluster: the chief does it alone, without waiting for peers that may have
      finished and will not come back (an Indexed Job never reruns an index that succeeded),
      and another worker has nothing left to do.

  Returns:
    A `tf.distribute.Strategy`.

  Raises:
    errors.NothingLeft: on a worker other than the chief of a trained run.
  """
  if name not in STRATEGY_CHOICES:
    raise UserInputError(f"--strategy={name}: choose one of {STRATEGY_CHOICES}.")
  threads.size_thread_pools()  # Before anything starts TensorFlow's runtime.
  gpus.check_gpus_visible(options.require_gpus)
  cluster = resolve.resolve_cluster(options)
  if trained and cluster and cluster.num_workers > 1:
    if not cluster.is_chief:
      raise errors.NothingLeft(f"The run is trained already; its chief tests and exports it. "
                               f"Nothing left for {cluster.task_type} {cluster.task_index}.")
    logging.info("The run is trained already: finishing it alone, without the other workers.")
    cluster, name = None, "auto" if name == "multi_worker" else name
  workers = cluster.num_workers if cluster else 1
  if name == "auto":
    if workers > 1:
      name = "multi_worker"
    else:
      name = "mirrored" if len(tf.config.list_physical_devices("GPU")) > 1 else "one_device"
  elif workers > 1 and name != "multi_worker":
    raise UserInputError(f"--strategy={name} trains in one process, but {cluster.source} "
                         f"describes {workers} workers: use --strategy=multi_worker or auto.")
  if name == "multi_worker":
    if workers > 1:
      peers.wait_for_peers(cluster, options.cluster_wait_seconds)
      if cluster.source != "TF_CONFIG":
        os.environ["TF_CONFIG"] = json.dumps(cluster.tf_config())  # What TensorFlow reads.
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
  spec = resolver.cluster_spec().as_dict()
  return sum(len(spec.get(role, [])) for role in resolve.TRAINING_ROLES)  # No ps or evaluators.
