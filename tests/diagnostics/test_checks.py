"""The preflight's checks in this process, on the CPU: 2 logical devices stand in for 2 GPUs."""

import os

import pytest
import tensorflow as tf

from trainer import config as config_lib
from trainer.diagnostics import cluster_checks
from trainer.diagnostics import device_checks
from trainer.diagnostics import report
from trainer.diagnostics import workdir_check

LOCAL = config_lib.get_preset("local")


def _outcome(check):
  """The `report.Outcome` of running `check`."""
  return report.run_check("check", check)


def test_outcomes_and_the_screen():
  """Each check ends as passed, failed or not run; the verdict names the last two kinds."""
  def fails():
    """A check that finds a problem."""
    raise report.CheckFailed("the GPU is not there")

  def cannot_run():
    """A check that needs a GPU."""
    raise report.CannotRunHere("no GPU")

  def crashes():
    """A check with a bug: reported as its failure, never stopping the others."""
    raise KeyError("x")

  outcomes = [report.run_check("a", lambda: "fine"), report.run_check("b", fails),
              report.run_check("c", cannot_run), report.run_check("d", crashes)]
  assert [o.status for o in outcomes] == [report.PASSED, report.FAILED, report.NOT_RUN,
                                          report.FAILED]
  assert outcomes[3].detail == "KeyError: 'x'"
  assert report.failures(outcomes) == ["b", "d"]
  screen = report.render("preflight of host", outcomes).splitlines()
  assert screen[0] == "preflight of host"
  assert screen[2] == "  FAILED   b  the GPU is not there"
  assert screen[-1] == ("preflight: 1 passed (a), 2 failed (b, d), 1 could not run here (c).")


def test_gpus_not_run_without_any_and_failed_when_allocated_but_not_seen(monkeypatch):
  """No GPU asked for or seen: not run. GPUs asked for but not seen: failed, with the libraries."""
  for variable in ("TRAINER_REQUIRE_GPUS", "NVIDIA_VISIBLE_DEVICES"):
    monkeypatch.delenv(variable, raising=False)
  assert _outcome(device_checks.check_gpus).status == report.NOT_RUN
  monkeypatch.setenv("TRAINER_REQUIRE_GPUS", "2")
  outcome = _outcome(device_checks.check_gpus)
  assert outcome.status == report.FAILED
  assert outcome.detail.startswith("2 allocated (TRAINER_REQUIRE_GPUS=2), 0 seen; ")


def test_cudnn_kernel_check_needs_a_gpu_and_tells_when_the_kernel_cannot_run():
  """Here (no GPU) the check does not run; forcing the kernel fails with Keras' reason."""
  assert _outcome(lambda: device_checks.check_cudnn_kernel(LOCAL)).status == report.NOT_RUN
  model = device_checks.build_reference_model(LOCAL)
  batch = device_checks.reference_batch(LOCAL, batch_size=4)
  outcome = _outcome(lambda: device_checks.compare_kernels(model, batch))
  assert outcome.status == report.FAILED
  assert "cannot take the cuDNN kernel here: use_cudnn=True was specified" in outcome.detail
  assert device_checks.step_seconds(model, batch, use_cudnn=False, steps=1) > 0


@pytest.mark.slow
def test_precision_check_times_a_mixed_policy_against_float32():
  """float32 on a CPU: nothing to compare here. A mixed policy given: its speed-up is measured."""
  assert _outcome(lambda: device_checks.check_precision(LOCAL)).status == report.NOT_RUN
  mixed = config_lib.override(LOCAL, precision="mixed_bfloat16")
  outcome = _outcome(lambda: device_checks.check_precision(mixed))
  assert outcome.status in (report.PASSED, report.FAILED)  # Its speed on a busy CPU.
  assert "mixed_bfloat16 in force: " in outcome.detail and "x float32's speed" in outcome.detail


def test_all_reduce_over_two_replicas_sums_right(mirrored):
  """Two replicas: the sum is checked and timed; one replica: nothing to all-reduce."""
  outcome = _outcome(lambda: cluster_checks.check_all_reduce(mirrored, 4 * 1000))
  assert outcome.status == report.PASSED, outcome.detail
  assert "0.00 MB (the gradients) over 2 replica(s) on 1 worker(s)" in outcome.detail
  assert outcome.detail.endswith("GB/s bus bandwidth, sums right")
  one = _outcome(lambda: cluster_checks.check_all_reduce(tf.distribute.get_strategy(), 4000))
  assert one.status == report.NOT_RUN


@pytest.mark.slow
def test_throughput_of_the_train_step_per_replica(mirrored):
  """The real train step on synthetic batches, per replica; no expectation without a GPU."""
  outcome = _outcome(lambda: cluster_checks.check_throughput(mirrored, LOCAL, steps=2))
  assert outcome.status == report.PASSED, outcome.detail
  assert "examples/s per replica (2 replica(s) on 1 worker(s), 128 reviews of 200 tokens" in (
      outcome.detail)
  assert outcome.detail.endswith("no GPU, so no expectation to compare with")


def test_workdir_check_leaves_nothing_and_fails_where_it_cannot_write(tmp_path):
  """A local folder: the probe is written, read, renamed and removed; a file as folder fails."""
  outcome = _outcome(lambda: workdir_check.check_workdir(str(tmp_path / "run")))
  assert outcome.status == report.PASSED, outcome.detail
  assert outcome.detail.endswith(f"as user {os.getuid()}")
  assert not list((tmp_path / "run").iterdir())
  (tmp_path / "file").write_text("")
  assert _outcome(lambda: workdir_check.check_workdir(str(tmp_path / "file"))).status == (
      report.FAILED)


@pytest.mark.usefixtures("emulator")
def test_workdir_check_on_gcs_with_the_emulator():
  """gs://: through the Cloud Storage client (the emulator here); a missing bucket fails."""
  from google.cloud import storage as gcs  # pylint: disable=import-outside-toplevel
  client = gcs.Client()
  client.create_bucket("runs")
  outcome = _outcome(lambda: workdir_check.check_workdir("gs://runs/imdb/manual/uid-1"))
  assert outcome.status == report.PASSED, outcome.detail
  assert "as no credentials (the storage emulator at http://127.0.0.1:" in outcome.detail
  assert not list(client.list_blobs("runs"))
  missing = _outcome(lambda: workdir_check.check_workdir("gs://missing/imdb"))
  assert missing.status == report.FAILED and missing.detail.startswith("NotFound: ")
