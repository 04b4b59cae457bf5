"""Training processes that know their cluster only from a Kubernetes Indexed Job's environment.

Two workers on this machine (loopback): TensorFlow's server binds every interface on its port, so
the address template `127.0.0.1:<prefix>{index}` gives them ports <prefix>0 and <prefix>1.
"""

import json
import os
import re
import subprocess
import sys
import time

import pytest

from trainer.errors import RETRY_EXIT_CODE
from trainer.testing.cluster import CLUSTER_VARIABLES
from trainer.testing.cluster import free_port_prefix

pytestmark = pytest.mark.slow  # Every test here trains, spawns processes or runs Beam.

TIMEOUT_SECONDS = 300  # Bound of every worker process.


def start_worker(index, num_workers, prefix, workdir, *flags):
  """Starts `python -m trainer.train` with only an Indexed Job's environment for the cluster."""
  env = {name: value for name, value in os.environ.items() if name not in CLUSTER_VARIABLES}
  env.update({"JOB_COMPLETION_INDEX": str(index), "TRAINER_NUM_WORKERS": str(num_workers),
              "TRAINER_WORKER_ADDRESS_TEMPLATE": f"127.0.0.1:{prefix}{{index}}",
              "CUDA_VISIBLE_DEVICES": "", "TF_CPP_MIN_LOG_LEVEL": "2"})
  return subprocess.Popen(
      [sys.executable, "-m", "trainer.train", "--synthetic_data", "--synthetic_steps=3",
       "--preset=local", "--global_batch_size=8", "--max_length=16", f"--workdir={workdir}",
       *flags], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)


def finish(workers):
  """The output of every worker process, each given the timeout; none is left running."""
  try:
    return [worker.communicate(timeout=TIMEOUT_SECONDS)[0] for worker in workers]
  finally:
    for worker in workers:
      worker.kill()
      worker.wait()


def test_indexed_job_workers_train_together(tmp_path):
  """Two workers, started 2 s apart, wait for each other, train 3 steps under
  MultiWorkerMirroredStrategy and end with identical weights; only worker 0 writes results."""
  prefix = free_port_prefix()
  workdir = tmp_path / "run"
  workers = [start_worker(1, 2, prefix, workdir, "--cluster_wait_seconds=120")]
  time.sleep(2)  # Worker 1 waits for worker 0: the handshake must work in either order.
  workers.insert(0, start_worker(0, 2, prefix, workdir, "--cluster_wait_seconds=120"))
  outputs = finish(workers)
  for worker, output in zip(workers, outputs):
    assert worker.returncode == 0, output[-3000:]
    assert "Every peer answered" in output
    assert "Strategy: multi_worker with 2 replicas in sync" in output  # --strategy=auto chose it.
  checksums = [re.findall(r"Final weights sha256 .*: ([0-9a-f]{64})", output)
               for output in outputs]
  assert len(checksums[0]) == 1 and checksums[0] == checksums[1]
  results = json.loads((workdir / "metrics.json").read_text())
  assert results["final_weights_sha256"] == checksums[0][0]
  assert results["step"] == 3
  # CollectiveAllReduceStrategy is the class of MultiWorkerMirroredStrategy.
  assert results["strategy"] == {"name": "CollectiveAllReduceStrategy", "workers": 2,
                                 "replicas": 2}


def test_missing_peer_ends_with_the_timeout_error(tmp_path):
  """Worker 0 of 2, alone, stops after --cluster_wait_seconds naming worker 1, with exit code 43
  (retried within the Job's backoffLimit, unlike bad input's 2): no hang."""
  prefix = free_port_prefix()
  start = time.monotonic()
  worker = start_worker(0, 2, prefix, tmp_path / "run", "--cluster_wait_seconds=3")
  [output] = finish([worker])
  assert time.monotonic() - start < 120
  assert (f"1 of 1 peers never answered within 3 s (--cluster_wait_seconds): worker 1 at "
          f"127.0.0.1:{prefix}1 (no connection: Connection refused)") in output, output[-3000:]
  assert worker.returncode == RETRY_EXIT_CODE
  assert not (tmp_path / "run" / "metrics.json").exists()
