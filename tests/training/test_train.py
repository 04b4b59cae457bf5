"""Training: steps, equivalence across strategies, precision, resume, bad input (CPU, tiny data)."""

import dataclasses
import glob
import json
import os
import re
import shutil
import socket
import subprocess
import sys
from unittest import mock

import numpy as np
import pytest
import tensorflow as tf

from tests.training.training_testing import checkpoint_weights
from tests.training.training_testing import float32_policy  # pylint: disable=unused-import  (a fixture)
from tests.training.training_testing import TINY
from tests.training.training_testing import train
from trainer import config as config_lib
from trainer.data import prepared_dataset
from trainer.errors import UserInputError
from trainer.modeling import model as model_lib
from trainer.training import optimization
from trainer.training import steps as steps_lib

def assert_same_weights(expected, actual, atol=1e-5):
  """Every weight (in model order) matches within float tolerance."""
  assert len(expected) == len(actual) == len(model_lib.build_model(TINY).weights)
  for index, (want, got) in enumerate(zip(expected, actual)):
    np.testing.assert_allclose(got, want, atol=atol, err_msg=f"weight {index}")


@pytest.mark.slow
def test_loss_falls_and_results_are_written(tmp_path, learnable_dir):
  """On learnable data the loss falls; metrics.json, config.json, summaries, checkpoints exist."""
  config = config_lib.override(TINY, epochs=4, eval_every_steps=20, profile_steps=(3, 4))
  results = train(config, tmp_path, data_dir=learnable_dir)
  history = results["history"]
  assert history[-1]["train"]["loss"] < 0.5 * history[0]["train"]["loss"]
  assert results["test"]["accuracy"] > 0.8 and results["test"]["examples"] == 200
  assert {"loss", "auc", "precision", "recall"} <= set(results["test"])
  assert any("validation" in record for record in history)
  written = json.loads((tmp_path / "metrics.json").read_text())
  assert written["test"] == results["test"] and written["config"]["training"]["epochs"] == 4
  assert {"tensorflow", "keras"} <= set(written["versions"]) and written["wall_seconds"] > 0
  assert written["examples_per_s"] > 0
  assert json.loads((tmp_path / "config.json").read_text())["config"]["model"]["rnn_units"] == [8]
  for run in ("", "train", "validation", "test"):  # hparams at the top, a folder per split.
    assert glob.glob(str(tmp_path / "tensorboard" / run / "events.out.tfevents.*")), run
  assert glob.glob(str(tmp_path / "tensorboard" / "plugins" / "profile" / "*" / "*.xplane.pb"))
  assert len(glob.glob(str(tmp_path / "checkpoints" / "ckpt-*.index"))) == config.run.keep_checkpoints


@pytest.mark.slow
def test_mirrored_over_two_devices_matches_one_device(tmp_path, learnable_dir, mirrored):
  """MirroredStrategy on 2 logical CPUs ends with the weights of a one-device run."""
  options = {"data_dir": learnable_dir, "max_steps": 6, "deterministic": True}
  train(TINY, tmp_path / "one", tf.distribute.get_strategy(), **options)
  results = train(TINY, tmp_path / "two", mirrored, **options)
  assert results["strategy"]["replicas"] == 2
  assert_same_weights(checkpoint_weights(tmp_path / "one"), checkpoint_weights(tmp_path / "two"))


def config_flags(config):
  """The command-line flags that give `config`."""
  return [f"--{name}={','.join(map(str, value)) if isinstance(value, tuple) else value}"
          for section in config_lib.sections(config)
          for name, value in dataclasses.asdict(section).items()]


def free_port():
  """A loopback port that was free a moment ago."""
  with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    return s.getsockname()[1]


@pytest.mark.slow
def test_multi_worker_over_two_processes_matches_one_device(tmp_path, learnable_dir):
  """Two processes under MultiWorkerMirroredStrategy on loopback end with identical weights,
  those of a one-device run with the same global batch (dropout on): every worker takes its
  replica's rows of the same global batches. Neither prints an error on its way out."""
  steps = 6
  ports = [free_port(), free_port()]
  flags = config_flags(config_lib.override(
      TINY, max_steps=steps, deterministic=True, strategy="multi_worker",
      data_dir=learnable_dir)) + [f"--workdir={tmp_path / 'run'}"]
  workers = []
  for index in range(2):
    tf_config = {"cluster": {"worker": [f"127.0.0.1:{p}" for p in ports]},
                 "task": {"type": "worker", "index": index}}
    workers.append(subprocess.Popen(
        [sys.executable, "-m", "trainer.train", *flags], stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT, text=True,
        env={**os.environ, "TF_CONFIG": json.dumps(tf_config), "CUDA_VISIBLE_DEVICES": ""}))
  try:
    outputs = [worker.communicate(timeout=300)[0] for worker in workers]
  finally:
    for worker in workers:
      worker.kill()
  for worker, output in zip(workers, outputs):
    assert worker.returncode == 0, output[-3000:]
    assert "Exception in thread" not in output, output[-3000:]
  checksums = [re.findall(r"Final weights sha256 .*: ([0-9a-f]{64})", output) for output in outputs]
  assert checksums[0] and checksums[0] == checksums[1]  # Both workers hold the same weights.
  assert not glob.glob(str(tmp_path / "run" / "*worker*"))  # Only the chief wrote the workdir.
  train(TINY, tmp_path / "one", tf.distribute.get_strategy(), data_dir=learnable_dir,
        max_steps=steps, deterministic=True)
  assert_same_weights(checkpoint_weights(tmp_path / "one"), checkpoint_weights(tmp_path / "run"))


@pytest.mark.slow
@pytest.mark.parametrize("precision", ["mixed_float16", "mixed_bfloat16"])
def test_mixed_precision_runs_with_float32_logits(tmp_path, learnable_dir, precision):
  """Half-precision policies train on CPU with float32 logits and a finite loss."""
  results = train(TINY, tmp_path, data_dir=learnable_dir, precision=precision, max_steps=4)
  assert results["precision"] == precision
  assert all(np.isfinite(record["train"]["loss"]) for record in results["history"])
  assert np.isfinite(results["test"]["loss"])
  model = model_lib.build_model(TINY)
  assert model.get_layer("embedding").compute_dtype == precision.split("_")[1]
  assert model.output.dtype == "float32"


@pytest.mark.slow
def test_resumed_run_ends_like_an_uninterrupted_one(tmp_path, learnable_dir):
  """Stopped at step 7 and started again, a run ends with the same weights as one never stopped
  (dropout included: its random state is checkpointed)."""
  config = config_lib.override(TINY, dropout=0.3, embedding_dropout=0.1, epochs=0.5,
                               data_dir=learnable_dir, deterministic=True)
  whole = train(config, tmp_path / "whole")
  first = train(config, tmp_path / "split", max_steps=7)
  assert first["step"] == 7 and whole["step"] > 7
  resumed = train(config, tmp_path / "split")
  assert resumed["step"] == whole["step"]
  assert resumed["final_weights_sha256"] == whole["final_weights_sha256"]
  assert resumed["test"] == whole["test"]


def test_missing_dataset_names_the_prepare_command(tmp_path):
  """A data dir without prepared TFRecords says which command makes them."""
  with pytest.raises(UserInputError, match="not a prepared dataset.*python -m trainer.prepare"):
    train(TINY, tmp_path / "run", data_dir=str(tmp_path))


def test_global_batch_must_divide_among_replicas(tmp_path, learnable_dir, mirrored):
  """9 reviews cannot split over 2 replicas."""
  with pytest.raises(UserInputError, match="global_batch_size=9 does not divide evenly among 2"):
    train(config_lib.override(TINY, global_batch_size=9), tmp_path, mirrored,
          data_dir=learnable_dir)


def test_unwritable_workdir_fails_at_start(tmp_path, learnable_dir):
  """A workdir that cannot be created fails before any training."""
  (tmp_path / "a_file").write_text("")
  with pytest.raises(UserInputError, match="Writing to --workdir=.* failed"):
    train(TINY, tmp_path / "a_file" / "run", data_dir=learnable_dir)


@pytest.mark.slow
def test_resume_refuses_another_vocabulary_or_config(tmp_path, learnable_dir):
  """Checkpoints are not resumed with a different vocabulary or model."""
  train(TINY, tmp_path / "run", data_dir=learnable_dir, max_steps=2)
  other_data = tmp_path / "other_data"
  shutil.copytree(learnable_dir, other_data)
  vocabulary = (other_data / "vocab.txt").read_text().split("\n")
  vocabulary[2], vocabulary[3] = vocabulary[3], vocabulary[2]
  (other_data / "vocab.txt").write_text("\n".join(vocabulary))
  with pytest.raises(UserInputError, match="another .*Use the original --data_dir"):
    train(TINY, tmp_path / "run", data_dir=str(other_data))
  with pytest.raises(UserInputError, match=r"other values of \['model.rnn_units'\]"):
    train(config_lib.override(TINY, rnn_units=(4,)), tmp_path / "run", data_dir=learnable_dir)


@pytest.mark.slow
def test_debug_mode_runs_eagerly_and_then_restores_graph_mode(tmp_path):
  """--debug trains (eagerly, with numeric checks) and leaves tf.function compiled after."""
  with mock.patch.object(tf.debugging, "enable_check_numerics",
                         wraps=tf.debugging.enable_check_numerics) as check_numerics:
    results = train(config_lib.override(TINY, max_length=8), tmp_path, synthetic_data=True,
                    synthetic_steps=2, debug=True)
  assert results["step"] == 2 and check_numerics.called
  assert not tf.config.functions_run_eagerly()


@pytest.mark.slow
def test_synthetic_data_needs_no_dataset(tmp_path):
  """--synthetic_data trains on generated batches and reports throughput."""
  results = train(TINY, tmp_path, synthetic_data=True, synthetic_steps=3)
  assert results["step"] == 3 and results["examples_per_s"] > 0 and "test" not in results


@pytest.mark.slow
def test_command_line_prepares_then_trains(tmp_path, aclimdb_tarball):
  """The README's main command: no --data_dir, a local tarball, the local preset."""
  completed = subprocess.run(
      [sys.executable, "-m", "trainer.train", "--preset=local", f"--input={aclimdb_tarball}",
       f"--workdir={tmp_path / 'run'}", "--epochs=1", "--max_steps=2"],
      capture_output=True, text=True, timeout=300, check=False)
  assert completed.returncode == 0, completed.stderr[-3000:]
  assert prepared_dataset.load_metadata(str(tmp_path / "run" / "data"))
  results = json.loads((tmp_path / "run" / "metrics.json").read_text())
  assert results["step"] == 2 and 0 <= results["test"]["accuracy"] <= 1
  summary = completed.stdout  # What was tested, where the export is, what to run next.
  assert f"on {results['test']['examples']:,} test reviews: accuracy" in summary
  assert f"Export: {results['export']}" in summary and "python -m trainer.predict" in summary
  (tmp_path / "a_file").write_text("")  # A workdir that cannot be made: before preparing.
  unwritable = subprocess.run(
      [sys.executable, "-m", "trainer.train", "--preset=local", f"--input={aclimdb_tarball}",
       f"--workdir={tmp_path / 'a_file' / 'run'}"], capture_output=True, text=True, timeout=300,
      check=False)
  assert unwritable.returncode == 2 and "Traceback" not in unwritable.stderr, (
      unwritable.stderr[-2000:])
  assert "Writing to --workdir=" in unwritable.stderr
  bad = subprocess.run([sys.executable, "-m", "trainer.train", "--preset=local",
                        f"--data_dir={tmp_path}", f"--workdir={tmp_path / 'run2'}"],
                       capture_output=True, text=True, timeout=300, check=False)
  assert bad.returncode == 2 and "not a prepared dataset" in bad.stderr, bad.stderr[-2000:]


@pytest.mark.slow
def test_moving_average_is_evaluated_and_checkpointed(tmp_path, learnable_dir, mirrored):
  """With EMA on two replicas, evaluation swaps the averages in and out; resume stays exact."""
  config = config_lib.override(TINY, ema_momentum=0.9, epochs=0.5, data_dir=learnable_dir,
                               deterministic=True)
  model, optimizer = optimization.build_model_and_optimizer(mirrored, config, 10, "float32")
  with mirrored.scope():
    for weight in model.trainable_variables:
      weight.assign(tf.ones_like(weight))
  trained = [w.numpy() for w in model.trainable_variables]
  averages = [average.numpy() for average in
              optimizer._model_variables_moving_average]  # pylint: disable=protected-access
  with steps_lib.evaluation_weights(model, optimizer):
    for weight, average in zip(model.trainable_variables, averages):
      np.testing.assert_array_equal(weight.numpy(), average)
  for weight, value in zip(model.trainable_variables, trained):
    np.testing.assert_array_equal(weight.numpy(), value)
  whole = train(config, tmp_path / "whole", mirrored)
  train(config, tmp_path / "split", mirrored, max_steps=5)
  resumed = train(config, tmp_path / "split", mirrored)
  assert resumed["final_weights_sha256"] == whole["final_weights_sha256"]
  assert resumed["test"] == whole["test"]
