"""Local clusters for tests and checks: free loopback ports, and a clean cluster environment."""

import os
import random
import socket

# The environment variables that describe a cluster: the parent's must not leak into workers.
CLUSTER_VARIABLES = ("TF_CONFIG", "CLUSTER_SPEC", "JOB_COMPLETION_INDEX", "TRAINER_NUM_WORKERS",
                     "TRAINER_WORKER_ADDRESS_TEMPLATE")


def port_is_free(port):
  """Whether `port` can be bound on every interface now (as TensorFlow's server binds it)."""
  with socket.socket() as s:
    try:
      s.bind(("", port))
    except OSError:
      return False
  return True


def free_port_prefix(workers=2, exclude=()):
  """A number P such that ports P0 ... P<workers - 1> are free, below the ephemeral port range.

  `exclude`: prefixes handed out already, whose ports may not be bound yet.
  """
  for prefix in random.Random(os.getpid()).sample(range(1100, 3200), 500):
    if prefix not in exclude and all(port_is_free(int(f"{prefix}{index}"))
                                     for index in range(workers)):
      return prefix
  raise RuntimeError(f"No {workers} free ports <prefix>0 ... on this machine.")
