r"""One worker vs two MultiWorkerMirrored workers on the real data, dropout on: same result?

  python benchmarks/replica_equivalence.py --data_dir=/tmp/imdb_prepared [--max_steps=0]

Trains the `local` preset for one epoch (1,406 steps of 16 reviews) with the `default` preset's
dropout (embedding 0.2, word 0.2, output 0.3) and --deterministic twice with the same global
batch: in one process, and in two processes under MultiWorkerMirroredStrategy on loopback
(TF_CONFIG). Prints the test loss and accuracy of
both and their difference; the last line is JSON, also written to
benchmarks/results/replica-equivalence.json.
"""

import json
import os
import socket
import subprocess
import sys
import tempfile

from absl import app
from absl import flags

import common

FLAGS = flags.FLAGS
common.define_data_flags()
flags.DEFINE_integer("max_steps", 0, "Stop after this step (0: the preset's whole epoch).")
flags.DEFINE_string("workdir", None, "Where the runs write (a new temporary folder if unset); "
                    "runs there are resumed, finished ones evaluated again.")
_DROPOUT = ["--embedding_dropout=0.2", "--word_dropout=0.2", "--dropout=0.3", "--epochs=1"]
_RUN_SECONDS = 1800


def free_port():
  """A loopback port that was free a moment ago."""
  with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    return s.getsockname()[1]


def train(workdir, data_dir, workers):
  """Runs the trainer in `workers` processes (1: no cluster); returns the chief's metrics.json."""
  flags_ = ["--preset=local", *_DROPOUT, "--deterministic", f"--max_steps={FLAGS.max_steps}",
            f"--data_dir={data_dir}", f"--workdir={workdir}"]
  ports = [free_port() for _ in range(workers)]
  processes = []
  for index in range(workers):
    env = dict(os.environ, CUDA_VISIBLE_DEVICES="")
    if workers > 1:
      env["TF_CONFIG"] = json.dumps({"cluster": {"worker": [f"127.0.0.1:{p}" for p in ports]},
                                     "task": {"type": "worker", "index": index}})
    processes.append(subprocess.Popen([sys.executable, "-m", "trainer.train", *flags_],
                                      cwd=common.REPOSITORY, env=env,
                                      stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
  for process in processes:
    if process.wait(timeout=_RUN_SECONDS):
      raise RuntimeError(f"A trainer process failed with exit code {process.returncode}.")
  with open(os.path.join(workdir, "metrics.json")) as f:
    return json.load(f)


def main(argv):
  """Trains both ways and prints the comparison."""
  del argv
  workdir = FLAGS.workdir or tempfile.mkdtemp(prefix="replica_equivalence_")
  data_dir = common.prepared_data_dir(workdir)
  runs = {workers: train(os.path.join(workdir, f"{workers}_workers"), data_dir, workers)
          for workers in (1, 2)}
  summary = {f"{name}_{workers}_workers": round(runs[workers]["test"][name], 5)
             for workers in runs for name in ("loss", "accuracy")}
  summary.update(steps=runs[1]["step"], test_loss_difference=round(abs(runs[1]["test"]["loss"]
                                                - runs[2]["test"]["loss"]), 5),
                 same_final_weights=(runs[1]["final_weights_sha256"]
                                     == runs[2]["final_weights_sha256"]),
                 **common.run_facts())
  print(json.dumps(summary))
  common.write_result("replica-equivalence.json", summary)


if __name__ == "__main__":
  app.run(main)
