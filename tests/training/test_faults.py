"""Fault injection: SIGTERM and SIGKILL mid-training, corrupt checkpoints and shards, failed saves.

The test plays the job controller: it starts the trainer, signals it at a step drawn from a
seeded random generator, starts it again on the same workdir, and compares the end with an
uninterrupted run (same --deterministic flags): same final weights, same test metrics.
"""

import glob
import json
import os
import random
import re
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from unittest import mock

import pytest
import tensorflow as tf

from trainer import config as config_lib
from trainer import errors
from trainer.errors import UserInputError
from trainer.training import train_lib

pytestmark = pytest.mark.slow  # Every test here trains, spawns processes or runs Beam.

# About 90 steps of a few milliseconds; a checkpoint every 5; a log line every step; the best
# validation's weights exported (kept in the checkpoints, so they must survive the faults too).
FLAGS = ["--preset=local", "--vocab_size=40", "--max_length=40", "--global_batch_size=8",
         "--epochs=4", "--checkpoint_every_steps=5", "--log_every_steps=1",
         "--eval_batch_size=64", "--deterministic", "--export=best"]
CONFIG = config_lib.override(config_lib.get_preset("local"), vocab_size=40, max_length=40,
                             global_batch_size=8, epochs=1.0, checkpoint_every_steps=4,
                             eval_batch_size=64)


def train(workdir, **run):
  """Trains CONFIG with these fields of its run section."""
  return train_lib.train_and_evaluate(config_lib.override(CONFIG, **run), workdir)
_STEP_LINE = re.compile(r"train \| step: (\d+)/")
_RESUMED = re.compile(r"Resumed from \S*ckpt-(\d+) at step (\d+)")
_RUN_SECONDS = 180  # A run that takes longer is killed and fails the test.


def run_trainer(workdir, data_dir, signal_at_step=None, signal_number=None):
  """Runs the trainer CLI; sends `signal_number` once it logs step `signal_at_step`.

  Returns:
    (exit code, the output, the last step it logged before the signal was sent or None).
  """
  process = subprocess.Popen(
      [sys.executable, "-m", "trainer.train", *FLAGS, f"--data_dir={data_dir}",
       f"--workdir={workdir}"], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
  watchdog = threading.Timer(_RUN_SECONDS, process.kill)
  watchdog.start()
  lines, signalled_at = [], None
  try:
    for line in process.stdout:
      lines.append(line)
      match = _STEP_LINE.search(line)
      if match and signalled_at is None and signal_at_step is not None and (
          int(match.group(1)) >= signal_at_step):
        signalled_at = int(match.group(1))
        process.send_signal(signal_number)
    process.wait()
  finally:
    watchdog.cancel()
    process.kill()
  return process.returncode, "".join(lines), signalled_at


def final_results(workdir):
  """The final weights' checksum and test metrics a finished run wrote."""
  results = json.loads(open(os.path.join(workdir, "metrics.json")).read())
  return results["final_weights_sha256"], results["test"]


def latest_checkpoint_step(workdir):
  """The step number of the newest checkpoint in <workdir>/checkpoints."""
  return int(tf.train.latest_checkpoint(os.path.join(workdir, "checkpoints")).rsplit("-", 1)[1])


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory, learnable_dir):
  """Final checksum and test metrics of a run that was never interrupted."""
  workdir = str(tmp_path_factory.mktemp("uninterrupted"))
  code, output, _ = run_trainer(workdir, learnable_dir)
  assert code == 0, output[-3000:]
  return final_results(workdir)


def test_sigterm_and_sigkill_any_number_of_times_end_like_an_uninterrupted_run(
    tmp_path, learnable_dir, uninterrupted):
  """SIGTERM saves the current step (exit 42, nothing lost); SIGKILL repeats at most the steps
  since the last periodic checkpoint; the resumed job ends with the same weights and metrics."""
  workdir = str(tmp_path / "run")
  draw = random.Random(6)
  for signal_number in (signal.SIGTERM, signal.SIGKILL, signal.SIGTERM, signal.SIGKILL):
    step = (latest_checkpoint_step(workdir) if glob.glob(f"{workdir}/checkpoints/*.index")
            else 0) + draw.randint(2, 12)
    code, output, signalled_at = run_trainer(workdir, learnable_dir, step, signal_number)
    assert signalled_at is not None, output[-3000:]
    saved = latest_checkpoint_step(workdir)
    if signal_number == signal.SIGTERM:
      assert code == errors.RESTART_EXIT_CODE, output[-3000:]
      assert f"saved a checkpoint at step {saved}" in output
      assert saved >= signalled_at  # Not a step the job had reported done is lost.
    else:
      assert code == -signal.SIGKILL
      assert saved >= signalled_at - 5  # At most checkpoint_every_steps are repeated.
  code, output, _ = run_trainer(workdir, learnable_dir)
  assert code == 0, output[-3000:]
  assert _RESUMED.search(output).groups() == (str(saved), str(saved))
  assert final_results(workdir) == uninterrupted


def free_port():
  """A loopback port that was free a moment ago."""
  with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    return s.getsockname()[1]


def run_two_workers(workdir, data_dir, signal_at_step=None, signal_number=None):
  """Runs a 2-worker MultiWorkerMirrored job on loopback; signals worker 1 at a step.

  Returns:
    ([exit codes], [outputs], the step worker 0 had logged when the signal was sent or None,
    seconds from the signal until every worker had exited).
  """
  addresses = [f"127.0.0.1:{free_port()}" for _ in range(2)]
  os.makedirs(os.path.dirname(workdir), exist_ok=True)
  logs = [open(os.path.join(os.path.dirname(workdir), f"worker{i}.log"), "w+")
          for i in range(2)]
  workers = [subprocess.Popen(
      [sys.executable, "-m", "trainer.train", *FLAGS, "--strategy=multi_worker",
       f"--data_dir={data_dir}", f"--workdir={workdir}"], stdout=log, stderr=subprocess.STDOUT,
      env={**os.environ, "TF_CONFIG": json.dumps(
          {"cluster": {"worker": addresses}, "task": {"type": "worker", "index": index}})})
             for index, log in enumerate(logs)]
  deadline = time.monotonic() + _RUN_SECONDS
  signalled_at = signalled_time = None
  try:
    while any(worker.poll() is None for worker in workers) and time.monotonic() < deadline:
      if signal_at_step is not None and signalled_at is None:
        logs[0].seek(0)
        steps = [int(step) for step in _STEP_LINE.findall(logs[0].read())]
        if steps and steps[-1] >= signal_at_step:
          signalled_at, signalled_time = steps[-1], time.monotonic()
          workers[1].send_signal(signal_number)
      time.sleep(0.05)
  finally:
    for worker in workers:
      worker.kill()
      worker.wait()
  outputs = []
  for log in logs:
    log.seek(0)
    outputs.append(log.read())
    log.close()
  exit_seconds = time.monotonic() - signalled_time if signalled_time else None
  return [worker.returncode for worker in workers], outputs, signalled_at, exit_seconds


def test_multi_worker_sigterm_and_lost_peer_end_like_an_uninterrupted_run(tmp_path,
                                                                          learnable_dir):
  """SIGTERM to one of 2 workers: both save the same step and exit 42. SIGKILL to one: the other
  exits 42 with a clear error within seconds, not a hang. Restarted, they end exactly."""
  codes, outputs, _, _ = run_two_workers(str(tmp_path / "whole" / "run"), learnable_dir)
  assert codes == [0, 0], outputs[0][-3000:] + outputs[1][-3000:]
  expected = final_results(str(tmp_path / "whole" / "run"))
  workdir = str(tmp_path / "interrupted" / "run")
  draw = random.Random(7)

  codes, outputs, signalled_at, _ = run_two_workers(workdir, learnable_dir, draw.randint(3, 20),
                                                    signal.SIGTERM)
  assert codes == [errors.RESTART_EXIT_CODE] * 2, outputs[0][-3000:] + outputs[1][-3000:]
  saved = latest_checkpoint_step(workdir)
  assert saved >= signalled_at and all(f"saved a checkpoint at step {saved}" in output
                                       for output in outputs)

  codes, outputs, signalled_at, exit_seconds = run_two_workers(
      workdir, learnable_dir, saved + draw.randint(3, 12), signal.SIGKILL)
  assert codes == [errors.RESTART_EXIT_CODE, -signal.SIGKILL], outputs[0][-3000:]
  assert "Lost another worker" in outputs[0] and exit_seconds < 60
  assert latest_checkpoint_step(workdir) >= signalled_at - 5

  codes, outputs, _, _ = run_two_workers(workdir, learnable_dir)
  assert codes == [0, 0], outputs[0][-3000:] + outputs[1][-3000:]
  assert final_results(workdir) == expected


def test_corrupt_latest_checkpoint_falls_back_to_the_one_before(tmp_path, learnable_dir, caplog):
  """A damaged newest checkpoint is skipped with a warning; the run still ends exactly."""
  whole = train(str(tmp_path / "whole"), data_dir=learnable_dir, deterministic=True)
  workdir = str(tmp_path / "run")
  train(workdir, data_dir=learnable_dir, max_steps=8, deterministic=True)
  data_file = glob.glob(f"{workdir}/checkpoints/ckpt-8.data-*")[0]
  with open(data_file, "r+b") as f:
    f.truncate(os.path.getsize(data_file) // 2)
  resumed = train(workdir, data_dir=learnable_dir, deterministic=True)
  assert "ckpt-8 cannot be read" in caplog.text
  assert resumed["start_step"] == 4
  assert resumed["final_weights_sha256"] == whole["final_weights_sha256"]


def test_no_readable_checkpoint_says_how_to_start_over(tmp_path, learnable_dir):
  """When every checkpoint is damaged, the error says so and what to do."""
  workdir = str(tmp_path / "run")
  train(workdir, data_dir=learnable_dir, max_steps=4)
  for index_file in glob.glob(f"{workdir}/checkpoints/*.index"):
    with open(index_file, "wb") as f:
      f.write(b"garbage")
  with pytest.raises(UserInputError, match="No checkpoint in .* can be read"):
    train(workdir, data_dir=learnable_dir)


def test_corrupt_shard_is_named(tmp_path, learnable_dir):
  """A TFRecord shard with a damaged record fails the run with an error naming that shard."""
  data_dir = str(tmp_path / "data")
  shutil.copytree(learnable_dir, data_dir)
  shard = sorted(glob.glob(f"{data_dir}/train-*.tfrecord"))[1]
  with open(shard, "r+b") as f:
    f.seek(200)
    f.write(b"\x00" * 16)
  with pytest.raises(UserInputError, match=re.escape(shard) + r".*--overwrite"):
    train(str(tmp_path / "run"), data_dir=data_dir)


def test_failed_save_keeps_the_previous_checkpoint(tmp_path, learnable_dir):
  """A save that fails (disk full) stops the run with a clear error; the last one still loads."""
  workdir = str(tmp_path / "run")
  real_save = tf.train.CheckpointManager.save
  calls = []

  def save_until_disk_full(manager, *args, **kwargs):
    """The first save works; the second finds the disk full."""
    calls.append(kwargs.get("checkpoint_number"))
    if len(calls) > 1:
      raise tf.errors.ResourceExhaustedError(None, None, "No space left on device")
    return real_save(manager, *args, **kwargs)

  with mock.patch.object(tf.train.CheckpointManager, "save", save_until_disk_full):
    with pytest.raises(UserInputError, match=r"step 8 .*No space left on device.*ckpt-4\) is "
                                             r"intact"):
      train(workdir, data_dir=learnable_dir)
  assert latest_checkpoint_step(workdir) == 4
  resumed = train(workdir, data_dir=learnable_dir)
  assert resumed["step"] == resumed["total_steps"]
