r"""`python -m tests.training.faulty_train <trainer.train flags>`: the trainer with faults injected.

  FAULTY_TRAIN=nan_loss:8,nan_weights:12 python -m tests.training.faulty_train --workdir=...

The first time step 8 runs in this process its loss is NaN (its update is kept, as a NaN from a
bad batch would leave it); after the first run of step 12 every weight is NaN while the step's
loss stays finite (an exploding gradient). `storage_outage:10`: saving the checkpoint of step 10
fails as TensorFlow's GCS file system fails once its retries are spent (ABORTED). In a test's own
process, `injected(faults)` does the same. Without FAULTY_TRAIN it is `python -m trainer.train`.
"""

import contextlib
import math
import os
from unittest import mock

import tensorflow as tf

from trainer import cli
from trainer import train
from trainer.training import steps

KINDS = ("nan_loss", "nan_weights", "storage_outage")


def parse(spec):
  """{step: kind} of a FAULTY_TRAIN value such as "nan_loss:8,nan_weights:12"."""
  faults = {}
  for item in filter(None, spec.split(",")):
    kind, step = item.split(":")
    assert kind in KINDS, f"{kind}: not one of {KINDS}"
    faults[int(step)] = kind
  return faults


def faulty(build_train_step, faults):
  """`build_train_step` whose steps go wrong as `faults` ({step: kind}) say, once each."""

  def build(strategy, model, optimizer, training, element_spec):
    """The real train step, wrapped."""
    step_function = build_train_step(strategy, model, optimizer, training, element_spec)
    done = set()

    def step(batch, number):
      """One step; the fault of its number, the first time it runs."""
      loss_sum, correct = step_function(batch, number)
      kind = faults.get(int(number))
      if kind in ("nan_loss", "nan_weights") and int(number) not in done:
        done.add(int(number))
        if kind == "nan_loss":
          loss_sum *= math.nan
        else:
          for weight in model.trainable_variables:
            weight.assign(tf.fill(tf.shape(weight), math.nan))
      return loss_sum, correct

    return step

  return build


def failing_saves(save, faults):
  """`tf.train.CheckpointManager.save` failing at the steps of `faults` that are storage_outage."""

  def faulty_save(manager, *args, checkpoint_number=None, **kwargs):
    """Saves, unless this step's save meets an outage."""
    if faults.get(checkpoint_number) == "storage_outage":
      raise tf.errors.AbortedError(None, None, "All 10 retry attempts failed (simulated)")
    return save(manager, *args, checkpoint_number=checkpoint_number, **kwargs)

  return faulty_save


@contextlib.contextmanager
def injected(faults):
  """Inside the block, runs of the trainer in this process meet `faults` ({step: kind})."""
  with (mock.patch.object(steps, "build_train_step", faulty(steps.build_train_step, faults)),
        mock.patch.object(tf.train.CheckpointManager, "save",
                          failing_saves(tf.train.CheckpointManager.save, faults))):
    yield


if __name__ == "__main__":
  with injected(parse(os.environ.get("FAULTY_TRAIN", ""))):
    cli.define_flags(train.FLAG_GROUPS)
    cli.run(train.main)
