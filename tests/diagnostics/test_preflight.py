"""python -m trainer.preflight as a pod runs it: two workers on loopback, and a failing check."""

import os
import sys

import pytest

from tests.training.workers import Worker
from trainer.testing.cluster import CLUSTER_VARIABLES
from trainer.testing.cluster import free_port_prefix

FLAGS = ["--preset=local", "--preflight_steps=2"]


def _start(tmp_path, name, flags, cluster_variables=None):
  """Starts `python -m trainer.preflight <flags>` on the CPU; returns its `Worker`."""
  environment = {key: value for key, value in os.environ.items() if key not in CLUSTER_VARIABLES}
  environment.update(CUDA_VISIBLE_DEVICES="", TF_CPP_MIN_LOG_LEVEL="2",
                     **(cluster_variables or {}))
  return Worker([sys.executable, "-m", "trainer.preflight", *FLAGS, *flags], environment,
                str(tmp_path / f"{name}.log"))


def _screen(output):
  """The lines of the preflight's screen: from its header to its verdict."""
  lines = output.splitlines()
  start = next(i for i, line in enumerate(lines) if line.startswith("preflight of "))
  end = next(i for i, line in enumerate(lines) if line.startswith("preflight: "))
  return lines[start:end + 1]


@pytest.mark.slow
def test_two_workers_reach_each_other_and_all_reduce_across_them(tmp_path):
  """As the Indexed Job's pods: peers answer, the all-reduce spans both workers, exit 0 on each."""
  prefix = free_port_prefix(2)
  workers = [_start(tmp_path, f"worker{index}", [f"--workdir={tmp_path / 'run'}"], {
      "TRAINER_NUM_WORKERS": "2", "JOB_COMPLETION_INDEX": str(index),
      "TRAINER_WORKER_ADDRESS_TEMPLATE": f"127.0.0.1:{prefix}{{index}}"}) for index in range(2)]
  for index, worker in enumerate(workers):
    code, output = worker.finish()
    assert code == 0, output[-3000:]
    screen = _screen(output)
    assert screen[0].startswith("preflight of ")
    assert f"worker {index} of 2 worker(s)" in screen[0]
    details = {line.split()[1]: line for line in screen[1:-1] if not line.startswith("  not run")}
    assert "1 peer(s) answered" in details["peers"]
    assert "over 2 replica(s) on 2 worker(s)" in details["all-reduce"]
    assert "sums right" in details["all-reduce"]
    assert "examples/s per replica (2 replica(s) on 2 worker(s)" in details["throughput"]
    assert screen[-1].startswith("preflight: 4 passed (peers, workdir, all-reduce, throughput), "
                                 "0 failed, 3 could not run here (gpus, cudnn, precision).")
  assert not list((tmp_path / "run").iterdir())  # The workdir probes are gone.


@pytest.mark.slow
def test_a_failed_check_exits_2_after_the_whole_screen(tmp_path):
  """A workdir that cannot be written fails its check; the others still run; exit code 2."""
  (tmp_path / "not-a-folder").write_text("")
  code, output = _start(tmp_path, "failing", [f"--workdir={tmp_path / 'not-a-folder'}"]).finish()
  assert code == 2, output[-3000:]
  screen = _screen(output)
  assert screen[3].startswith("  FAILED   workdir")
  assert screen[-1].startswith("preflight: 1 passed (throughput), 1 failed (workdir), ")
  (error,) = [line for line in output.splitlines() if line.startswith("error:")]
  assert error == "error: preflight: workdir failed (the screen above says why)."
