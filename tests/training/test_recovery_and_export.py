"""NaN recovery, and which weights are tested and exported: the moving average, the best."""

from unittest import mock

import numpy as np
import pytest
import tensorflow as tf

from tests.training.training_testing import float32_policy  # pylint: disable=unused-import  (a fixture)
from tests.training.training_testing import TINY
from tests.training.training_testing import train
from trainer import config as config_lib
from trainer.data import text
from trainer.serving import export
from trainer.training import optimization
from trainer.training import steps as steps_lib
from trainer.training import train_log

pytestmark = pytest.mark.slow  # Every test here trains, spawns processes or runs Beam.

REVIEWS = ["a great and moving film", "boring, the worst plot", "it was a film"]


def nan_at_calls(calls_with_nan):
  """Patches the train step to return a NaN loss on these calls (1-based; a set, or "from N")."""
  real_build = steps_lib.build_train_step

  def build(*args):
    """The real step, with NaN losses on the chosen calls."""
    step = real_build(*args)
    calls = []

    def maybe_nan(batch, number):
      """One step."""
      calls.append(1)
      loss_sum, correct = step(batch, number)
      return (loss_sum * np.nan if calls_with_nan(len(calls)) else loss_sum), correct

    return maybe_nan

  return mock.patch.object(steps_lib, "build_train_step", build)


@pytest.mark.parametrize("recoveries, message", [
    (0, "loss became nan between steps 2 and 3"),
    (2, "loss became nan.*2 recoveries tried"),
])
def test_a_nan_that_keeps_coming_stops_with_the_last_good_checkpoint(tmp_path, learnable_dir,
                                                                     recoveries, message):
  """NaN from step 3 on: after --max_nan_recoveries recoveries (each meets a NaN again) the run
  stops with a clear error; the step-2 checkpoint stays."""
  config = config_lib.override(TINY, checkpoint_every_steps=2, log_every_steps=1,
                               max_nan_recoveries=recoveries)
  with nan_at_calls(lambda call: call >= 3):
    with pytest.raises(train_log.TrainingDiverged, match=message):
      train(config, tmp_path, data_dir=learnable_dir)
  assert tf.train.latest_checkpoint(str(tmp_path / "checkpoints")).endswith("ckpt-2")


def test_a_nan_is_recovered_from_past_the_offending_batches(tmp_path, learnable_dir):
  """A NaN at step 6: back to the step-4 checkpoint, the batches of steps 5-6 skipped, done."""
  config = config_lib.override(TINY, checkpoint_every_steps=4, log_every_steps=2, max_steps=10)
  with nan_at_calls(lambda call: call == 6):
    results = train(config, tmp_path, data_dir=learnable_dir)
  assert results["nan_recoveries"] == 1 and results["step"] == 10
  steps = [record["step"] for record in results["history"]]
  assert steps == sorted(set(steps)) and 6 in steps  # Step 6 trained again, on other batches.
  assert all(np.isfinite(record["train"]["loss"]) for record in results["history"])
  checkpoint = tf.train.latest_checkpoint(str(tmp_path / "checkpoints"))
  assert tf.train.load_variable(checkpoint, "data_offset/.ATTRIBUTES/VARIABLE_VALUE") == 2


def served(export_path):
  """Probabilities of REVIEWS from an export, in this process."""
  serve = tf.saved_model.load(export_path).signatures[export.SIGNATURE]
  return serve(reviews=tf.constant(REVIEWS))["probability"].numpy()


def classified(config, weights, data_dir):
  """Probabilities of REVIEWS from a classifier with these weights."""
  vocabulary = text.load_vocabulary(f"{data_dir}/vocab.txt")
  classifier = export.build_classifier(config, weights, vocabulary)
  return classifier(tf.constant(REVIEWS))["probability"].numpy()


def test_the_export_holds_the_moving_average_of_the_weights(tmp_path, learnable_dir):
  """With EMA, the export serves the averaged weights of the final checkpoint, not the raw."""
  config = config_lib.override(TINY, ema_momentum=0.9, max_steps=12, data_dir=learnable_dir)
  results = train(config, tmp_path)
  model, optimizer = optimization.build_model_and_optimizer(
      tf.distribute.get_strategy(), config, results["total_steps"], "float32")
  tf.train.Checkpoint(model=model, optimizer=optimizer).restore(
      tf.train.latest_checkpoint(str(tmp_path / "checkpoints"))).expect_partial()
  averages = [average.numpy() for average in optimization.moving_averages(optimizer)]
  np.testing.assert_allclose(served(results["export"]),
                             classified(config, averages, learnable_dir), atol=1e-6)
  assert not np.allclose(served(results["export"]),
                         classified(config, model.get_weights(), learnable_dir), atol=1e-6)


def test_best_export_tests_and_serves_the_best_validation_weights(tmp_path, learnable_dir):
  """--export=best picks the best validation; a resumed run picks the same, exactly."""
  config = config_lib.override(TINY, export="best", tuning_metric="loss", eval_every_steps=4,
                               epochs=1.0, learning_rate=0.05, data_dir=learnable_dir,
                               deterministic=True)
  whole = train(config, tmp_path / "whole")
  validations = {record["step"]: record["validation"] for record in whole["history"]
                 if "validation" in record}
  best_step = min(validations, key=lambda step: validations[step]["loss"])
  assert whole["tested_step"] == best_step and whole["validation"] == validations[best_step]
  assert export.load_metadata(whole["export"])["validation"] == validations[best_step]
  train(config, tmp_path / "split", max_steps=8)  # A validation step of both runs.
  resumed = train(config, tmp_path / "split")
  assert (resumed["tested_step"], resumed["test"]) == (best_step, whole["test"])
  np.testing.assert_allclose(served(resumed["export"]), served(whole["export"]), atol=1e-6)
