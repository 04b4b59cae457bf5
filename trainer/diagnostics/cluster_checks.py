"""Checks that use every replica of the strategy: an all-reduce, and the training throughput.

Both run collectives: every worker of a cluster must run them, in the same order.
"""

import statistics
import time

import tensorflow as tf

from trainer.cluster import strategy as strategy_lib
from trainer import config as config_lib
from trainer.diagnostics import device_checks
from trainer.diagnostics.report import CannotRunHere
from trainer.diagnostics.report import CheckFailed
from trainer.training import datasets
from trainer.training import optimization
from trainer.training import steps as steps_lib

TIMED_ALL_REDUCES = 10
# docs/scaling.md: one GPU trains ~22,000 examples/s at 128 reviews of 200 tokens (cuDNN). A GPU
# that falls back to the generic kernel, or a job on the CPU, is far below a quarter of that.
EXPECTED_EXAMPLES_PER_SECOND_PER_GPU = 22000
MIN_SHARE_OF_EXPECTED = 0.25


def _replicas_described(strategy):
  """E.g. "8 replica(s) on 2 worker(s)": what a collective of the strategy spans."""
  return (f"{strategy.num_replicas_in_sync} replica(s) on {strategy_lib.num_workers(strategy)} "
          "worker(s)")


def check_all_reduce(strategy, num_bytes):
  """Sums a float32 tensor of `num_bytes` over every replica; checks the sum, times it.

  The bandwidth is the bus bandwidth of a ring all-reduce: each replica sends and receives
  2 (N - 1) / N of the tensor (docs/scaling.md).
  """
  replicas = strategy.num_replicas_in_sync
  if replicas < 2:
    raise CannotRunHere("one replica: nothing to all-reduce with (no second GPU or worker)")
  elements = num_bytes // 4

  @tf.function
  def all_reduce():
    """Replica r contributes r + 1 in every element; returns each replica's sum."""
    def replica_sum():
      """This replica's part of the all-reduce."""
      context = tf.distribute.get_replica_context()
      value = tf.fill([elements], tf.cast(context.replica_id_in_sync_group + 1, tf.float32))
      return context.all_reduce(tf.distribute.ReduceOp.SUM, value)
    return strategy.experimental_local_results(strategy.run(replica_sum))

  seconds = []
  for _ in range(TIMED_ALL_REDUCES + 1):  # The first traces and warms up.
    start = time.perf_counter()
    sums = [result.numpy() for result in all_reduce()]
    seconds.append(time.perf_counter() - start)
  expected = replicas * (replicas + 1) / 2
  wrong = [float(value.min()) for value in sums
           if value.min() != expected or value.max() != expected]
  if wrong:
    raise CheckFailed(f"the all-reduce over {_replicas_described(strategy)} gave {wrong[0]}, "
                      f"not {expected:g}")
  median = statistics.median(seconds[1:])
  bandwidth = 2 * (replicas - 1) / replicas * num_bytes / median
  return (f"{num_bytes / 1e6:.2f} MB (the gradients) over {_replicas_described(strategy)} in "
          f"{median * 1e3:.1f} ms: {bandwidth / 1e9:.2f} GB/s bus bandwidth, sums right")


def check_throughput(strategy, config, steps):
  """Examples/s per replica of the real train step on synthetic batches of the reference shape.

  Args:
    strategy: the strategy of the run.
    config: the run's config (its model, optimizer and precision).
    steps: timed steps, after one that traces.
  """
  replicas = strategy.num_replicas_in_sync
  config = config_lib.override(
      config, global_batch_size=device_checks.REFERENCE_BATCH * replicas,
      max_length=device_checks.REFERENCE_LENGTH, synthetic_data=True, synthetic_steps=steps + 1)
  data = datasets.resolve_data(config)
  model, optimizer = optimization.build_model_and_optimizer(
      strategy, data.config, data.total_steps, optimization.resolve_precision(config.run.precision))
  batches, _ = datasets.build_datasets(strategy, data, start_step=0)
  train_step = steps_lib.build_train_step(strategy, model, optimizer, data.config.training,
                                          batches.element_spec)
  batch_iterator = iter(batches)
  float(train_step(next(batch_iterator), tf.constant(1, tf.int64))[0])  # Traces.
  start = time.perf_counter()
  for step in range(2, steps + 2):
    loss_sum, _ = train_step(next(batch_iterator), tf.constant(step, tf.int64))
  float(loss_sum)  # Waits for the devices.
  per_replica = device_checks.REFERENCE_BATCH * steps / (time.perf_counter() - start)
  found = (f"{per_replica:,.0f} examples/s per replica ({_replicas_described(strategy)}, "
           f"{device_checks.REFERENCE_BATCH} reviews of {device_checks.REFERENCE_LENGTH} tokens "
           f"each, {steps} steps)")
  if not tf.config.list_physical_devices("GPU"):
    return f"{found}; no GPU, so no expectation to compare with"
  share = per_replica / EXPECTED_EXAMPLES_PER_SECOND_PER_GPU
  found += f": {share:.0%} of docs/scaling.md's ~{EXPECTED_EXAMPLES_PER_SECOND_PER_GPU:,} per GPU"
  if share < MIN_SHARE_OF_EXPECTED:
    raise CheckFailed(f"{found}, below {MIN_SHARE_OF_EXPECTED:.0%}: check the cuDNN and GPU "
                      "checks above")
  return found
