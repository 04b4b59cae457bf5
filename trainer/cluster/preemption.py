"""Saving on preemption: SIGTERM -> a checkpoint at the current step -> exit code 42 (restart me).

Kubernetes and Vertex AI send SIGTERM, then SIGKILL after the grace period. On SIGTERM the job
finishes the step it is in, saves a checkpoint and raises `errors.Preempted`, which the entry
points turn into exit code 42 (`errors.RESTART_EXIT_CODE`); the manifests treat that code as
"restart, not a failure", and the restarted job resumes from that checkpoint, losing no step.

- One worker: the loop checks after each step whether SIGTERM came, and saves at that step.
- Several workers (MultiWorkerMirroredStrategy): one preempted worker must make every worker save
  at the same step, or the others would hang in the next collective. TensorFlow's
  `PreemptionCheckpointHandler` agrees on that step through the coordination service; here it
  watches the same SIGTERM flag on every platform (its own default on GCP polls the VM's
  maintenance events instead, which a pod eviction does not raise).
"""

import contextlib
import signal
import threading

from absl import logging
import tensorflow as tf

from trainer.errors import Preempted


@contextlib.contextmanager
def sigterm_flag():
  """Inside the block, SIGTERM sets the yielded `threading.Event` instead of killing the process.

  Outside the main thread (where signals cannot be handled) the event is never set.
  """
  received = threading.Event()
  if threading.current_thread() is not threading.main_thread():
    yield received
    return

  def on_sigterm(signum, frame):
    """Notes the signal; the training loop acts on it after the current step."""
    del signum, frame
    logging.warning("SIGTERM received: saving a checkpoint after this step, then exiting.")
    received.set()

  previous = signal.signal(signal.SIGTERM, on_sigterm)
  try:
    yield received
  finally:
    signal.signal(signal.SIGTERM, previous)


class CheckpointOnPreemption:
  """After each step: saves and raises `Preempted` once SIGTERM reached this or any worker."""

  def __init__(self, strategy, manager, received, multi_worker):
    """Watches `received` (from `sigterm_flag`) and saves with `manager` (a CheckpointManager)."""
    self._manager = manager
    self._received = received
    self._saved_step = None
    self._handler = None
    if multi_worker:
      config = tf.distribute.experimental.TerminationConfig(
          termination_watcher_fn=received.is_set, exit_fn=self._exit, grace_period=0)
      self._handler = tf.distribute.experimental.PreemptionCheckpointHandler(
          strategy.cluster_resolver, manager, termination_config=config)

  def after_step(self, step):
    """Call after each training step with the number of steps done."""
    if self._handler:
      self._saved_step = step
      self._handler.save_checkpoint_if_preempted(checkpoint_number=step)
    elif self._received.is_set():
      self._manager.save(checkpoint_number=step)
      raise Preempted(step)

  def _exit(self):
    """The handler saved at the agreed step: leave the training loop."""
    raise Preempted(self._saved_step)

  def stop(self):
    """Stops watching the other workers: call on every worker once training is done.

    TensorFlow's handler watches the cluster from a thread blocked on the coordination service
    (hosted by the chief) until it is told to stop, which otherwise happens only when the handler
    is garbage-collected: a worker that outlives the chief then prints an UnavailableError from
    that thread. Stopping while every worker is still there ends the thread cleanly. This calls
    the handler's own (private) stop method; tests/cluster/test_indexed_job.py fails if it goes.
    """
    if self._handler:
      self._handler._stop_cluster_wise_termination_watcher_thread()  # pylint: disable=protected-access

