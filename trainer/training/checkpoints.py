"""The run's checkpoints: what they hold, where each worker saves, and resuming from them.

A checkpoint never holds a non-finite value: a save of such a state raises `NonFiniteState`
instead (an exploding gradient can leave NaN weights behind a finite loss), and a restore skips a
checkpoint that holds one (written by an older version) as it skips an unreadable one.
"""

import contextlib
import shutil
import tempfile

from absl import logging
import keras
import numpy as np
import tensorflow as tf

from trainer import errors
from trainer.errors import UserInputError
from trainer import storage
from trainer.training import train_log


def _random_generator_states(model):
  """The dropout generators' state variables: not weights, so not in the model's checkpoint."""
  weights = {id(weight) for weight in model.weights}
  return [variable.value for variable in model.variables if id(variable) not in weights]


class NonFiniteState(train_log.TrainingDiverged):
  """The state to save holds NaN or infinite values: it is not saved."""


def _float_variables(*trackables):
  """The floating-point variables among `trackables` (variables, lists of them, Keras objects)."""
  found = []
  for trackable in trackables:
    if isinstance(trackable, (list, tuple)):
      found += _float_variables(*trackable)
    elif isinstance(trackable, keras.optimizers.Optimizer):
      found += _float_variables(*trackable.variables)
    elif tf.as_dtype(trackable.dtype).is_floating:  # Keras variables name their dtype.
      found.append(trackable)
  return found


def _non_finite(variables):
  """The names of the variables holding a NaN or infinite value (read on the host)."""
  return [variable.name for variable in variables if not np.isfinite(variable.numpy()).all()]


class _FiniteCheckpointManager(tf.train.CheckpointManager):
  """A CheckpointManager that refuses to save a non-finite state and never restores on its own.

  Every save goes through `save`: the periodic ones, and on SIGTERM the trainer's own or that of
  TensorFlow's `PreemptionCheckpointHandler` (several workers). That handler also calls
  `restore_or_initialize()` when it is made, which would restore the newest checkpoint even when
  it is the corrupt one the run has just fallen back past: the run restores by itself
  (`RunCheckpoints.restore_newest_readable`), so here it does nothing.
  """

  def __init__(self, checkpoint, directory, max_to_keep, checked_variables):
    """Saves `checkpoint` into `directory` once `checked_variables` are all finite."""
    super().__init__(checkpoint, directory, max_to_keep=max_to_keep)
    self._checked_variables = checked_variables

  def save(self, checkpoint_number=None, check_interval=True, options=None):
    """Saves like CheckpointManager.save; a failed save leaves the previous checkpoints intact.

    Raises:
      NonFiniteState: nothing is written.
      errors.StorageUnavailable: the storage failed in a way that may pass (exit 43, retried).
      UserInputError: it failed in a way that will not (no space, no permission).
    """
    bad = _non_finite(self._checked_variables)
    if bad:
      raise NonFiniteState(
          f"The state to checkpoint at step {checkpoint_number} is not finite ({len(bad)} "
          f"variables, e.g. {bad[0]}): not saved. The last good checkpoint "
          f"({self.latest_checkpoint}) is kept. Lower --learning_rate or --clip_norm, or use "
          "--precision=float32; --debug finds the first op that goes non-finite.")
    with storage.reported_failures(
        self.directory, f"Saving the checkpoint of step {checkpoint_number} in "
        f"{self.directory}", f"The previous checkpoint ({self.latest_checkpoint}) is intact: "
        "free disk space or restore write access, then start the job again to resume from it."):
      return super().save(checkpoint_number=checkpoint_number, check_interval=check_interval,
                          options=options)

  def restore_or_initialize(self):
    """Does nothing: the run has restored (or not) already."""
    return None


class RunCheckpoints:
  """Model, optimizer, step, data offset and more state, saved with a CheckpointManager."""

  def __init__(self, model, optimizer, directory, keep, **more):
    """Saves into `directory`, keeping the newest `keep` checkpoints.

    Args:
      model: the Keras model.
      optimizer: its optimizer.
      directory: where this worker saves.
      keep: how many checkpoints are kept.
      **more: other trackable state to save, by name.
    """
    self.step = tf.Variable(0, dtype=tf.int64, trainable=False, name="step")
    # Batches skipped by NaN recoveries: step s trains on stream position s + data_offset.
    self.data_offset = tf.Variable(0, dtype=tf.int64, trainable=False, name="data_offset")
    self.checkpoint = tf.train.Checkpoint(model=model, optimizer=optimizer, step=self.step,
                                          data_offset=self.data_offset,
                                          random_states=_random_generator_states(model), **more)
    self._checked_variables = _float_variables(model.weights, optimizer, list(more.values()))
    self.manager = _FiniteCheckpointManager(self.checkpoint, directory, keep,
                                            self._checked_variables)

  def restore_newest_readable(self, directory):
    """Restores the newest checkpoint in `directory` that reads; returns its step (0: none).

    A checkpoint that cannot be read (truncated, corrupt) or holds a non-finite value is skipped
    with a warning for the one before it.

    Raises:
      UserInputError: when there are checkpoints and none of them is usable.
    """
    candidates = checkpoints_newest_first(directory)
    problems = []
    for path in candidates:
      try:
        self.checkpoint.restore(path).assert_existing_objects_matched()
      except (tf.errors.OpError, ValueError, IndexError, AssertionError) as e:  # Truncated, garbled.
        logging.warning("Checkpoint %s cannot be read (%s: %s); trying the one before it.", path,
                        type(e).__name__, errors.first_line(e))
        problems.append(f"{path}: {type(e).__name__}")
        continue
      bad = _non_finite(self._checked_variables)
      if bad:
        logging.warning("Checkpoint %s holds non-finite values (%s); trying the one before it.",
                        path, bad[0])
        problems.append(f"{path}: non-finite {bad[0]}")
        continue
      logging.info("Resumed from %s at step %d.", path, int(self.step))
      return int(self.step)
    if problems:
      raise UserInputError(
          f"No checkpoint in {directory} can be read ({'; '.join(problems)}). Move that folder "
          "away to train from the start, or use a new --workdir.")
    return 0

  def save(self, step):
    """Saves the checkpoint of `step` (see `_FiniteCheckpointManager.save`)."""
    self.manager.save(checkpoint_number=step)


def checkpoint_steps(directory):
  """The steps N of the checkpoints ckpt-N in `directory`, newest first, read from the file names.

  Only file names are read (no TensorFlow op runs): it may be called before the strategy.
  """
  numbers = []
  for index_file in tf.io.gfile.glob(storage.join(directory, "ckpt-*.index")):
    number = index_file[:-len(".index")].rsplit("-", 1)[1]
    if number.isdigit():
      numbers.append(int(number))
  return sorted(numbers, reverse=True)


def checkpoints_newest_first(directory):
  """The checkpoint prefixes (ckpt-N) in `directory`, newest first, read from the file names."""
  return [storage.join(directory, f"ckpt-{number}") for number in checkpoint_steps(directory)]


@contextlib.contextmanager
def worker_checkpoint_dir(chief, run_checkpoints_dir):
  """Where this worker saves: the run's folder, or for other workers one of their own.

  Other workers save too (the strategy needs it), in a temporary folder removed at the end.
  """
  if chief:
    yield run_checkpoints_dir
    return
  folder = tempfile.mkdtemp(prefix="imdb_worker_checkpoints_")
  try:
    yield folder
  finally:
    shutil.rmtree(folder, ignore_errors=True)
