"""Trainer processes as a cluster runs them: workers on loopback, started, signalled, replaced.

The tests play the job controller. Each worker is `python -m tests.training.faulty_train` (the
trainer's own main, with the faults of `faulty_train` injected when asked) with TF_CONFIG naming
every worker of the cluster; its output goes to a log file that the test reads as it goes.
"""

import json
import os
import re
import socket
import subprocess
import sys
import time

from trainer.testing.cluster import CLUSTER_VARIABLES

RUN_SECONDS = 180  # A worker that takes longer is killed and fails the test.
STEP_LINE = re.compile(r"train \| step: (\d+)/")
WEIGHTS = re.compile(r"Final weights sha256 .*: ([0-9a-f]{64})")


def free_port():
  """A loopback port that was free a moment ago."""
  with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    return s.getsockname()[1]


class Worker:
  """One trainer process, its log, and what it printed."""

  def __init__(self, command, env, log_path):
    """Starts `command` with `env`, its output going to `log_path`."""
    self.log_path = log_path
    with open(log_path, "w", encoding="utf-8") as log:
      self.process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env=env)  # pylint: disable=consider-using-with
    self.deadline = time.monotonic() + RUN_SECONDS

  def output(self):
    """Everything the worker printed so far."""
    with open(self.log_path, encoding="utf-8") as f:
      return f.read()

  def steps(self):
    """The steps of the log lines printed so far."""
    return [int(step) for step in STEP_LINE.findall(self.output())]

  def running(self):
    """Whether the process still runs (it is killed once past its deadline)."""
    if self.process.poll() is None and time.monotonic() > self.deadline:
      self.process.kill()
    return self.process.poll() is None

  def finish(self):
    """Waits for the process (killed at its deadline); returns (exit code, output)."""
    while self.running():
      time.sleep(0.05)
    return self.process.returncode, self.output()

  def weights(self):
    """The final weights' checksums the worker logged."""
    return WEIGHTS.findall(self.output())


class Cluster:
  """Workers of one loopback cluster: fixed addresses, so that a replaced worker rejoins it."""

  def __init__(self, folder, flags, workers=2):
    """A cluster of `workers` running `python -m tests.training.faulty_train <flags>`."""
    self.folder = folder
    self.flags = list(flags)
    self.addresses = [f"127.0.0.1:{free_port()}" for _ in range(workers)]
    self.starts = 0
    folder.mkdir(parents=True, exist_ok=True)

  def start(self, index, faults="", more_flags=()):
    """Starts (or replaces) worker `index`, with `faults` (see faulty_train) injected."""
    env = {name: value for name, value in os.environ.items() if name not in CLUSTER_VARIABLES}
    env.update(CUDA_VISIBLE_DEVICES="", FAULTY_TRAIN=faults, TF_CONFIG=json.dumps(
        {"cluster": {"worker": self.addresses}, "task": {"type": "worker", "index": index}}))
    self.starts += 1
    return Worker([sys.executable, "-m", "tests.training.faulty_train", *self.flags,
                   *more_flags], env, str(self.folder / f"start{self.starts}-worker{index}.log"))

  def start_all(self, faults="", more_flags=()):
    """Starts every worker."""
    return [self.start(index, faults, more_flags) for index in range(len(self.addresses))]


def signal_at_step(workers, step, signal_number, target=1):
  """Sends `signal_number` to worker `target` once worker 0 logged `step`.

  Returns:
    The step worker 0 had logged then, or None when a worker ended first.
  """
  while all(worker.running() for worker in workers):
    logged = workers[0].steps()
    if logged and logged[-1] >= step:
      workers[target].process.send_signal(signal_number)
      return logged[-1]
    time.sleep(0.05)
  return None


def finish_all(workers):
  """(exit codes, outputs) of every worker, each waited for up to its deadline."""
  results = [worker.finish() for worker in workers]
  return [code for code, _ in results], [output for _, output in results]
