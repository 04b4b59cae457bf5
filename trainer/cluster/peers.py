"""Waiting for the other workers of a cluster before MultiWorkerMirroredStrategy starts.

MultiWorkerMirroredStrategy hangs silently while a peer is missing; each worker instead listens
on its own port and probes every peer's until all answer, or stops with an error naming the
workers that never came.
"""

import contextlib
import socket
import time

from absl import logging

from trainer.cluster.resolve import split_address
from trainer.errors import PeersMissing
from trainer.errors import RETRY_EXIT_CODE
from trainer.errors import UserInputError

_PROBE_SECONDS = 5.0  # Longest wait for one connection attempt.
_REPORT_EVERY_SECONDS = 30.0  # How often a long wait logs who is still missing.


@contextlib.contextmanager
def _listening(address):
  """Inside the block, a non-blocking socket listens on the port of `address`, all interfaces."""
  _, port = split_address(address, "this worker's address")
  dual_stack = {"family": socket.AF_INET6, "dualstack_ipv6": True} if (
      socket.has_dualstack_ipv6()) else {}
  try:
    listener = socket.create_server(("", port), backlog=128, **dual_stack)
  except OSError as e:
    raise UserInputError(
        f"This worker ({address}) cannot listen on port {port}: {e.strerror or e}. Free the port "
        "or give this worker another one (workers on one machine need different ports).") from e
  listener.setblocking(False)
  try:
    yield listener
  finally:
    listener.close()


def _drop_connections(listener):
  """Accepts and closes the connections waiting on `listener`: the probes of peers."""
  while True:
    try:
      connection, _ = listener.accept()
    except (BlockingIOError, InterruptedError):
      return
    connection.close()


def _connection_problem(address, timeout_seconds):
  """Why `address` cannot be reached now, or None when it accepts a TCP connection."""
  host, port = split_address(address, "peer address")
  try:
    with socket.create_connection((host, port), timeout=timeout_seconds):
      return None
  except socket.gaierror as e:
    return f"the name {host} does not resolve: {e.strerror}"
  except OSError as e:
    return f"no connection: {e.strerror or e}"


def wait_for_peers(cluster, timeout_seconds, poll_seconds=1.0):
  """Returns once every other task of `cluster` resolves (DNS) and accepts a TCP connection.

  MultiWorkerMirroredStrategy's constructor waits silently for peers that never come; this waits
  with a deadline and names them. The chicken-and-egg: a peer's port is served by its TensorFlow
  gRPC server, which only starts inside its strategy's constructor, after its own wait. So while
  it waits, each process listens on its own port itself and drops the connections: waiting
  peers see each other. Once every peer has answered, it closes that socket and creates the
  strategy, whose server takes the port over. A peer still probing meanwhile is refused for a
  moment, tries again and reaches that server: any listener on a peer's port means the peer is
  up, its waiting socket or its gRPC server. (A peer that answers and then dies before its
  strategy starts still leaves TensorFlow waiting: that gap is seconds, the wait's is minutes.)

  Args:
    cluster: a `Cluster`.
    timeout_seconds: how long to wait in all.
    poll_seconds: pause between rounds of connection attempts.

  Raises:
    PeersMissing: naming the peers that did not answer in time, and why.
  """
  start = time.monotonic()
  deadline = start + timeout_seconds
  next_report = start + _REPORT_EVERY_SECONDS
  pending = {task: address for task, address in cluster.tasks if address != cluster.address}
  problems = {}
  logging.info("Cluster from %s: this is %s at %s; waiting up to %.0f s for %d peers.",
               cluster.source, f"{cluster.task_type} {cluster.task_index}", cluster.address,
               timeout_seconds, len(pending))
  with _listening(cluster.address) as listener:
    while True:
      for task, address in list(pending.items()):
        _drop_connections(listener)
        probe_seconds = min(_PROBE_SECONDS, max(deadline - time.monotonic(), 0.1))
        problems[task] = _connection_problem(address, probe_seconds)
        if problems[task] is None:
          del pending[task]
      _drop_connections(listener)
      now = time.monotonic()
      missing = "; ".join(f"{task} at {address} ({problems[task]})"
                          for task, address in pending.items())
      if not pending:
        logging.info("Every peer answered after %.1f s.", now - start)
        return
      if now >= deadline:
        raise PeersMissing(
            f"{len(pending)} of {cluster.num_workers - 1} peers never answered within "
            f"{timeout_seconds:g} s (--cluster_wait_seconds): {missing}. Check that they run "
            f"and that {cluster.source} gives their right addresses; exiting with code "
            f"{RETRY_EXIT_CODE} so that the job retries (within its backoffLimit).")
      if now >= next_report:
        logging.info("Still waiting for %d peers: %s.", len(pending), missing)
        next_report = now + _REPORT_EVERY_SECONDS
      time.sleep(min(poll_seconds, max(deadline - now, 0)))
