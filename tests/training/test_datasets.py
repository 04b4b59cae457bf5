"""The run's datasets: tf.data held to the container's CPU limit."""

import tensorflow as tf

from trainer.cluster import threads
from trainer.training import datasets


def test_tf_data_keeps_within_the_cpu_limit(monkeypatch):
  """With a limit of 1 core, tf.data gets a private pool of 1 thread and an autotune budget of 1;
  without a limit the dataset is left as it is."""
  dataset = tf.data.Dataset.range(3)
  monkeypatch.setenv(threads.CPU_LIMIT_VARIABLE, "1")
  options = datasets.within_cpu_limit(dataset).options()
  assert options.threading.private_threadpool_size == 1 and options.autotune.cpu_budget == 1
  monkeypatch.delenv(threads.CPU_LIMIT_VARIABLE)
  if threads.cpu_limit() == (None, None):  # This machine's cgroup sets no quota either.
    assert datasets.within_cpu_limit(dataset) is dataset
