"""TensorFlow's thread pools sized from the container's CPU limit, not from the host's cores.

TensorFlow sizes its inter-op and intra-op pools from the cores a process may be scheduled on:
a pod limited to 16 cores of a 48-core node would run 48 threads of each (tf.data's parallel
work runs on the inter-op pool too), and the CPU quota would throttle them. The limit is the
smallest of the cgroup's CPU quota (v2 `cpu.max`, v1 `cpu.cfs_quota_us` / `cpu.cfs_period_us`)
and $TRAINER_CPU_LIMIT (the manifests set it from the container's `limits.cpu` with the
downward API), never more than the cores this process may run on. Set it before TensorFlow's
runtime starts: `strategy.build_strategy` does, first thing.
"""

import math
import os
import pathlib

from absl import logging
import tensorflow as tf

from trainer.errors import UserInputError

CPU_LIMIT_VARIABLE = "TRAINER_CPU_LIMIT"
CGROUP_ROOT = "/sys/fs/cgroup"


def _read(path):
  """The stripped text of a file, or None when it cannot be read."""
  try:
    return pathlib.Path(path).read_text().strip()
  except OSError:
    return None


def cgroup_cpu_quota(root=CGROUP_ROOT):
  """Cores (a float) the cgroup's CPU quota allows this container, or None without a quota.

  Args:
    root: where the cgroup file system is mounted (v2: `cpu.max`; v1: `cpu/cpu.cfs_quota_us`).
  """
  unified = _read(os.path.join(root, "cpu.max"))  # "max 100000" or "<quota> <period>".
  if unified:
    quota, _, period = unified.partition(" ")
    return None if quota == "max" else int(quota) / int(period or 100000)
  for controller in ("cpu", "cpu,cpuacct"):
    quota = _read(os.path.join(root, controller, "cpu.cfs_quota_us"))
    period = _read(os.path.join(root, controller, "cpu.cfs_period_us"))
    if quota and period:
      return None if int(quota) < 0 else int(quota) / int(period)
  return None


def cpu_limit(environ=os.environ, root=CGROUP_ROOT):
  """(cores, their source) when a CPU limit applies to this process, else (None, None).

  Cores are whole (rounded up, as the downward API rounds `limits.cpu`) and at least 1.

  Raises:
    UserInputError: when $TRAINER_CPU_LIMIT is not a number of cores.
  """
  limits = {}
  quota = cgroup_cpu_quota(root)
  if quota:
    limits["the cgroup's CPU quota"] = quota
  value = environ.get(CPU_LIMIT_VARIABLE, "").strip()
  if value:
    try:
      limits[f"{CPU_LIMIT_VARIABLE}={value}"] = float(value)
    except ValueError:
      raise UserInputError(f"{CPU_LIMIT_VARIABLE}={value!r} is not a number of cores.") from None
  if not limits:
    return None, None
  source = min(limits, key=limits.get)
  return max(1, min(math.ceil(limits[source]), len(os.sched_getaffinity(0)))), source


def size_thread_pools(environ=os.environ, root=CGROUP_ROOT):
  """Gives TensorFlow's inter-op and intra-op pools as many threads as the CPU limit has cores.

  Returns:
    That number of threads, or None when no limit applies or TensorFlow's runtime already runs
    (its pools can no longer change: a warning says so).
  """
  cores, source = cpu_limit(environ, root)
  if cores is None:
    return None
  try:
    tf.config.threading.set_inter_op_parallelism_threads(cores)
    tf.config.threading.set_intra_op_parallelism_threads(cores)
  except RuntimeError as e:
    logging.warning("CPU limit of %d cores (%s), but TensorFlow's thread pools are already "
                    "sized (%s).", cores, source, e)
    return None
  logging.info("CPU limit of %d cores (%s): %d inter-op and %d intra-op threads.", cores, source,
               cores, cores)
  return cores
