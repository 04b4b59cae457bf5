"""TensorFlow's thread pools sized from the CPU limit: cgroup quotas, the manifests' variable."""

import os
import subprocess
import sys

import pytest

from trainer.cluster import threads
from trainer.errors import UserInputError

CORES_HERE = len(os.sched_getaffinity(0))


def _cgroup(root, files):
  """Writes a fake cgroup file system under `root`; returns its path."""
  for name, text in files.items():
    (root / name).parent.mkdir(parents=True, exist_ok=True)
    (root / name).write_text(text + "\n")
  return str(root)


@pytest.mark.parametrize("files,cores", [
    ({"cpu.max": "150000 100000"}, 1.5),  # cgroup v2
    ({"cpu.max": "max 100000"}, None),
    ({"cpu/cpu.cfs_quota_us": "200000", "cpu/cpu.cfs_period_us": "100000"}, 2.0),  # v1
    ({"cpu,cpuacct/cpu.cfs_quota_us": "50000", "cpu,cpuacct/cpu.cfs_period_us": "100000"}, 0.5),
    ({"cpu/cpu.cfs_quota_us": "-1", "cpu/cpu.cfs_period_us": "100000"}, None),
    ({}, None),
])
def test_cgroup_quota_in_cores(tmp_path, files, cores):
  """The quota of either cgroup version, None when there is none."""
  assert threads.cgroup_cpu_quota(_cgroup(tmp_path, files)) == cores


def test_the_smallest_limit_wins_rounded_up(tmp_path):
  """The variable and the quota both count; cores are whole, at least 1, at most the CPUs here."""
  root = _cgroup(tmp_path, {"cpu.max": "50000 100000"})
  assert threads.cpu_limit({}, root) == (1, "the cgroup's CPU quota")
  assert threads.cpu_limit({threads.CPU_LIMIT_VARIABLE: "16"}, root) == (
      1, "the cgroup's CPU quota")
  no_quota = _cgroup(tmp_path / "none", {})
  assert threads.cpu_limit({threads.CPU_LIMIT_VARIABLE: "1"}, no_quota) == (
      1, f"{threads.CPU_LIMIT_VARIABLE}=1")
  assert threads.cpu_limit({threads.CPU_LIMIT_VARIABLE: "64"}, no_quota)[0] == CORES_HERE
  assert threads.cpu_limit({}, no_quota) == (None, None)


def test_a_bad_limit_is_named(tmp_path):
  """A value that is not a number of cores is an error naming the variable."""
  with pytest.raises(UserInputError, match="TRAINER_CPU_LIMIT='16m' is not a number of cores"):
    threads.cpu_limit({threads.CPU_LIMIT_VARIABLE: "16m"}, _cgroup(tmp_path, {}))


@pytest.mark.slow
def test_building_the_strategy_sizes_the_pools_before_tensorflow_starts():
  """In a fresh process, build_strategy gives both pools as many threads as the limit has cores."""
  script = ("import tensorflow as tf\n"
            "from trainer.cluster import strategy\n"
            "strategy.build_strategy('default')\n"
            "print(tf.config.threading.get_inter_op_parallelism_threads(),\n"
            "      tf.config.threading.get_intra_op_parallelism_threads())\n")
  environment = {**os.environ, threads.CPU_LIMIT_VARIABLE: "1", "TF_CPP_MIN_LOG_LEVEL": "3"}
  result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                          env=environment, timeout=300, check=False)
  assert result.returncode == 0, result.stderr[-2000:]
  assert result.stdout.split() == ["1", "1"]


def test_a_running_runtime_is_left_as_it_is(caplog):
  """Once TensorFlow runs (as in this test process), the pools cannot change: a warning says so."""
  import tensorflow as tf  # pylint: disable=import-outside-toplevel
  tf.constant(1)  # The runtime runs.
  if tf.config.threading.get_inter_op_parallelism_threads() == 1:
    pytest.skip("the pools have one thread already: a limit of 1 changes nothing")
  assert threads.size_thread_pools({threads.CPU_LIMIT_VARIABLE: "1"}, "/nonexistent") is None
  assert "already sized" in caplog.text
