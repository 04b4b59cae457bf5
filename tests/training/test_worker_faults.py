"""Faults that split the workers of a cluster, broken the way a cluster breaks the job.

Two MultiWorkerMirrored workers on loopback (`workers.Cluster`), one of them replaced and the
other not, the fault at the worst moment; every worker must take the same path and end with the
weights of an uninterrupted run. In one process: the NaN recovery's bookkeeping and checkpoints
that hold NaN.
"""

import glob
import json
import os
import signal
import time
from unittest import mock

import numpy as np
import pytest
import tensorflow as tf

from tests.training import faulty_train
from tests.training.training_testing import float32_policy  # pylint: disable=unused-import  (a fixture)
from tests.training.training_testing import TINY
from tests.training.training_testing import train
from tests.training.workers import Cluster
from tests.training.workers import finish_all
from tests.training.workers import signal_at_step
from trainer import config as config_lib
from trainer import errors
from trainer.training import checkpoints as checkpoints_lib
from trainer.training import optimization
from trainer.training import workdir as workdir_lib

pytestmark = pytest.mark.slow  # Every test here trains, spawns processes or runs Beam.

# About 25 steps of a few milliseconds on each worker; a checkpoint every 5 steps.
FLAGS = ["--preset=local", "--vocab_size=40", "--max_length=40", "--global_batch_size=8",
         "--epochs=2", "--checkpoint_every_steps=5", "--log_every_steps=1",
         "--eval_batch_size=64", "--deterministic", "--strategy=multi_worker",
         "--cluster_wait_seconds=60"]


def run_flags(data_dir, workdir):
  """FLAGS for a run in `workdir` on the prepared `data_dir`."""
  return [*FLAGS, f"--data_dir={data_dir}", f"--workdir={workdir}"]


def assert_all_ended(codes, outputs, code=0):
  """Every worker exited with `code` and printed no stray exception."""
  assert codes == [code] * len(codes), "\n\n".join(output[-3000:] for output in outputs)
  for output in outputs:
    assert "Exception in thread" not in output and "Traceback" not in output, output[-3000:]


def final_results(workdir):
  """The final weights' checksum and test metrics a finished run wrote."""
  results = json.loads((workdir / "metrics.json").read_text())
  return results["final_weights_sha256"], results["test"]


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory, learnable_dir):
  """What two workers end with when nothing goes wrong."""
  workdir = tmp_path_factory.mktemp("uninterrupted") / "run"
  cluster = Cluster(workdir.parent / "logs", run_flags(learnable_dir, workdir))
  assert_all_ended(*finish_all(cluster.start_all()))
  return final_results(workdir)


def interrupted_cluster(tmp_path, data_dir, at_step):
  """A cluster whose workers were stopped (SIGTERM to worker 1) at `at_step` or just after.

  Returns:
    (the cluster, its workdir, the step both workers saved).
  """
  workdir = tmp_path / "run"
  cluster = Cluster(tmp_path / "logs", run_flags(data_dir, workdir))
  workers = cluster.start_all()
  assert signal_at_step(workers, at_step, signal.SIGTERM) is not None
  codes, outputs = finish_all(workers)
  assert codes == [errors.RESTART_EXIT_CODE] * 2, outputs[0][-3000:]
  return cluster, workdir, checkpoints_lib.checkpoint_steps(str(workdir / "checkpoints"))[0]


def test_a_nan_after_a_resume_is_recovered_by_every_worker(tmp_path, learnable_dir):
  """Restarted from a checkpoint, the workers meet a NaN: every worker goes back to the run's
  checkpoint, skips the same batches, and they end together with the same weights."""
  cluster, workdir, saved = interrupted_cluster(tmp_path, learnable_dir, 6)
  nan_step = saved + 3
  restored = max(saved, (nan_step - 1) // 5 * 5)  # The newest checkpoint before the NaN.
  workers = cluster.start_all(faults=f"nan_loss:{nan_step}")
  assert_all_ended(*finish_all(workers))
  for worker in workers:
    assert f"Recovery 1 of 3: back to step {restored}" in worker.output()
  first, second = (worker.weights() for worker in workers)
  assert len(first) == 1 and first == second
  assert json.loads((workdir / "metrics.json").read_text())["nan_recoveries"] == 1


def test_a_truncated_newest_checkpoint_is_skipped_by_every_worker(tmp_path, learnable_dir,
                                                                 uninterrupted):
  """The newest checkpoint of a stopped cluster is cut short: restarted, every worker falls back
  to the one before (TensorFlow's preemption handler must not restore it behind their back) and
  they end as an uninterrupted run."""
  cluster, workdir, saved = interrupted_cluster(tmp_path, learnable_dir, 7)
  assert saved > 5  # ckpt-5 is there to fall back to.
  data_file = glob.glob(str(workdir / "checkpoints" / f"ckpt-{saved}.data-*"))[0]
  with open(data_file, "r+b") as f:
    f.truncate(os.path.getsize(data_file) // 2)
  codes, outputs = finish_all(cluster.start_all())
  assert_all_ended(codes, outputs)
  for output in outputs:
    assert f"ckpt-{saved} cannot be read" in output and "Resumed from" in output
  assert final_results(workdir) == uninterrupted


def test_a_chief_replaced_after_the_other_worker_succeeded_finishes_alone(
    tmp_path, learnable_dir, uninterrupted):
  """Worker 1 exits 0 once training is done, while the chief still tests and exports; the chief
  is killed then. Its replacement (worker 1 is never rerun: its index succeeded) finishes the run
  alone at once, and a worker 1 started again has nothing left to do."""
  workdir = tmp_path / "run"
  cluster = Cluster(tmp_path / "logs", run_flags(learnable_dir, workdir))
  chief, other = cluster.start_all()
  while other.running():
    time.sleep(0.02)
  chief.process.kill()
  assert other.finish()[0] == 0, other.output()[-3000:]
  chief.finish()
  start = time.monotonic()
  code, output = cluster.start(0).finish()
  assert_all_ended([code], [output])
  assert time.monotonic() - start < 60  # It waited for no one (--cluster_wait_seconds=60).
  assert "finishing it alone" in output and "Every peer answered" not in output
  assert final_results(workdir) == uninterrupted
  assert glob.glob(str(workdir / "export" / "*" / "saved_model.pb"))
  code, output = cluster.start(1).finish()
  assert code == 0 and "Nothing left for worker 1" in output, output[-3000:]


def test_a_storage_outage_on_the_chief_is_retried_not_taken_for_a_lost_worker(tmp_path,
                                                                              learnable_dir):
  """GCS fails the chief's save of step 10 (ABORTED, its retries spent): the chief exits 43
  (retried, counted against the Job's backoffLimit); the other worker loses it and exits 42."""
  workdir = tmp_path / "run"
  cluster = Cluster(tmp_path / "logs", run_flags(learnable_dir, workdir))
  codes, outputs = finish_all([cluster.start(0, faults="storage_outage:10"), cluster.start(1)])
  assert codes == [errors.RETRY_EXIT_CODE, errors.RESTART_EXIT_CODE], outputs[0][-3000:]
  assert "Saving the checkpoint of step 10" in outputs[0] and "storage is unavailable" in (
      outputs[0])
  assert "Lost another worker" in outputs[1]


# --- In one process: the recovery's bookkeeping, storage errors, checkpoints that hold NaN.


@pytest.mark.parametrize("error, expected", [
    (tf.errors.AbortedError(None, None, "All 10 retry attempts failed"),
     errors.StorageUnavailable),
    (tf.errors.UnavailableError(None, None, "503"), errors.StorageUnavailable),
    (tf.errors.PermissionDeniedError(None, None, "403"), errors.UserInputError),
])
def test_a_failed_save_is_retryable_only_when_it_may_pass(tmp_path, learnable_dir, error,
                                                         expected):
  """One process, a save that fails at step 8: an outage exits 43, a refusal exits 2."""
  real_save = tf.train.CheckpointManager.save

  def failing(manager, *args, checkpoint_number=None, **kwargs):
    """Saves, but not step 8."""
    if checkpoint_number == 8:
      raise error
    return real_save(manager, *args, checkpoint_number=checkpoint_number, **kwargs)

  with mock.patch.object(tf.train.CheckpointManager, "save", failing):
    with pytest.raises(expected, match="Saving the checkpoint of step 8"):
      train(config_lib.override(TINY, checkpoint_every_steps=4), tmp_path,
            data_dir=learnable_dir)


def test_a_run_restarted_again_and_again_at_the_same_step_stops_for_good(tmp_path):
  """Five starts at step 8 pass; the sixth stops (exit 2); a start at a new step begins anew."""
  locations = workdir_lib.output_locations(str(tmp_path))
  for _ in range(5):
    workdir_lib.record_start(locations, 8, limit=5)
  with pytest.raises(errors.NoProgress, match="started 5 times in a row at step 8") as stopped:
    workdir_lib.record_start(locations, 8, limit=5)
  assert stopped.value.exit_code == errors.USER_ERROR_EXIT_CODE
  for _ in range(5):
    workdir_lib.record_start(locations, 12, limit=5)
  workdir_lib.record_start(locations, 12, limit=0)  # No limit.


def test_a_second_recovery_to_the_same_checkpoint_keeps_the_first_skip(tmp_path, learnable_dir):
  """NaN at step 6, back to step 4 (batches of 5-6 skipped); NaN at step 7, back to 4 again
  (5-7 skipped too): the offset adds up to 5, and a run stopped at step 10 (--max_steps) and
  resumed ends with the weights of the one never stopped."""
  config = config_lib.override(TINY, checkpoint_every_steps=4, log_every_steps=1,
                               keep_checkpoints=20, data_dir=learnable_dir, deterministic=True)
  with faulty_train.injected({6: "nan_loss", 7: "nan_loss"}):
    whole = train(config, tmp_path / "whole")
    train(config, tmp_path / "split", max_steps=10)
  assert whole["nan_recoveries"] == 2
  checkpoint = str(tmp_path / "whole" / "checkpoints" / "ckpt-8")
  assert tf.train.load_variable(checkpoint, "data_offset/.ATTRIBUTES/VARIABLE_VALUE") == 5
  resumed = train(config, tmp_path / "split")
  assert resumed["start_step"] == 10
  assert resumed["final_weights_sha256"] == whole["final_weights_sha256"]


def test_weights_that_went_nan_behind_a_finite_loss_are_never_checkpointed(tmp_path,
                                                                          learnable_dir):
  """An exploding gradient leaves NaN weights after step 8 while its loss is finite, and step 8
  saves: the save is refused, the run goes back to the step-4 checkpoint past the bad batches and
  ends well; no checkpoint of the run holds a NaN."""
  config = config_lib.override(TINY, checkpoint_every_steps=4, log_every_steps=4,
                               data_dir=learnable_dir)
  with faulty_train.injected({8: "nan_weights"}):
    results = train(config, tmp_path)
  assert results["nan_recoveries"] == 1 and results["step"] == results["total_steps"]
  for index_file in glob.glob(str(tmp_path / "checkpoints" / "ckpt-*.index")):
    reader = tf.train.load_checkpoint(index_file[:-len(".index")])
    for name in reader.get_variable_to_shape_map():
      value = np.asarray(reader.get_tensor(name))
      assert not np.issubdtype(value.dtype, np.floating) or np.isfinite(value).all(), name


def test_a_checkpoint_holding_nan_is_skipped_on_restore(tmp_path):
  """A checkpoint that holds a NaN (written before saves were checked) is passed over for the
  one before it, as an unreadable one is."""
  model, optimizer = optimization.build_model_and_optimizer(
      tf.distribute.get_strategy(), TINY, 10, "float32")
  saver = checkpoints_lib.RunCheckpoints(model, optimizer, str(tmp_path), 3)
  saver.step.assign(4)
  saver.save(4)
  good = [weight.numpy() for weight in model.weights]
  saver.step.assign(8)
  model.trainable_variables[0].assign(tf.fill(model.trainable_variables[0].shape, np.nan))
  with pytest.raises(checkpoints_lib.NonFiniteState, match="step 8 is not finite"):
    saver.save(8)
  tf.train.CheckpointManager.save(saver.manager, checkpoint_number=8)  # As an older version did.
  assert checkpoints_lib.checkpoint_steps(str(tmp_path)) == [8, 4]
  assert saver.restore_newest_readable(str(tmp_path)) == 4
  for weight, value in zip(model.weights, good):
    np.testing.assert_array_equal(weight.numpy(), value)
