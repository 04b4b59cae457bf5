"""The preflight: every check, in the order every worker follows, reported on one screen.

  screen, failed = preflight_lib.preflight(config, workdir, cluster_options, steps=20)

First the GPUs (before TensorFlow's runtime starts), then the strategy of the run, which waits
for the peers of a cluster (the peers' check), then the workdir, the cuDNN kernel, the precision,
an all-reduce over every replica and the training throughput. A check that cannot run on this
machine (no GPU, one worker) says so and does not fail the preflight.
"""

import dataclasses
import socket
import time

import tensorflow as tf

from trainer.cluster import strategy as strategy_lib
from trainer.cluster import threads
from trainer.diagnostics import cluster_checks
from trainer.diagnostics import device_checks
from trainer.diagnostics import report
from trainer.diagnostics import workdir_check
from trainer import errors


def _build_strategy(config, options):
  """(the run's strategy, the peers' `Outcome`); the default strategy when peers never came."""
  options = dataclasses.replace(options, require_gpus=0)  # The GPU check reports; never stops.
  start = time.monotonic()
  try:
    strategy = strategy_lib.build_strategy(config.run.strategy, options)
  except errors.PeersMissing as e:
    return tf.distribute.get_strategy(), report.Outcome("peers", report.FAILED,
                                                         errors.first_line(e))
  peers = strategy_lib.num_workers(strategy) - 1
  if not peers:
    return strategy, report.Outcome("peers", report.NOT_RUN, "one worker: no peers to reach")
  return strategy, report.Outcome(
      "peers", report.PASSED,
      f"{peers} peer(s) answered; the cluster formed in {time.monotonic() - start:.1f} s")


def _header(strategy):
  """Who checks: the host, the task, TensorFlow's version, the threads per pool."""
  task_type, task_id = strategy_lib.task(strategy)
  cores, source = threads.cpu_limit()
  pools = f"{cores} threads per pool ({source})" if cores else "thread pools of the host's cores"
  return (f"preflight of {socket.gethostname()}: {task_type} {task_id} of "
          f"{strategy_lib.num_workers(strategy)} worker(s), TensorFlow {tf.__version__}, {pools}")


def preflight(config, workdir, options, steps):
  """Runs every check.

  Args:
    config: the run's `config.Config` (model, precision, strategy).
    workdir: the run's output folder (local or gs://): a file is written there and removed.
    options: the cluster's `resolve.ClusterOptions`.
    steps: timed training steps of the throughput check.

  Returns:
    (the screen to print, the names of the checks that failed).
  """
  outcomes = [report.run_check("gpus", lambda: device_checks.check_gpus(options.require_gpus))]
  strategy, peers = _build_strategy(config, options)
  checks = {
      "workdir": lambda: workdir_check.check_workdir(workdir),
      "cudnn": lambda: device_checks.check_cudnn_kernel(config),
      "precision": lambda: device_checks.check_precision(config),
      "all-reduce": lambda: cluster_checks.check_all_reduce(
          strategy, device_checks.gradient_bytes(config)),
      "throughput": lambda: cluster_checks.check_throughput(strategy, config, steps),
  }
  outcomes += [peers] + [report.run_check(name, check) for name, check in checks.items()]
  return report.render(_header(strategy), outcomes), report.failures(outcomes)
