"""The run's checkpoints: what they hold, where each worker saves, and resuming from them."""

import contextlib
import shutil
import tempfile

from absl import logging
import tensorflow as tf

from trainer.cluster import preemption
from trainer import errors
from trainer.errors import UserInputError
from trainer import storage


def _random_generator_states(model):
  """The dropout generators' state variables: not weights, so not in the model's checkpoint."""
  weights = {id(weight) for weight in model.weights}
  return [variable.value for variable in model.variables if id(variable) not in weights]


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
    self.manager = tf.train.CheckpointManager(self.checkpoint, directory, max_to_keep=keep)

  def restore_newest_readable(self, directory):
    """Restores the newest checkpoint in `directory` that reads; returns its step (0: none).

    A checkpoint that cannot be read (truncated, corrupt) is skipped with a warning for the one
    before it.

    Raises:
      UserInputError: when there are checkpoints and none of them reads.
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
      logging.info("Resumed from %s at step %d.", path, int(self.step))
      return int(self.step)
    if problems:
      raise UserInputError(
          f"No checkpoint in {directory} can be read ({'; '.join(problems)}). Move that folder "
          "away to train from the start, or use a new --workdir.")
    return 0

  def save(self, step):
    """Saves the checkpoint of `step` (see `preemption.save_checkpoint`)."""
    preemption.save_checkpoint(self.manager, step)


def checkpoints_newest_first(directory):
  """The checkpoint prefixes (ckpt-N) in `directory`, newest first, read from the file names."""
  numbers = []
  for index_file in tf.io.gfile.glob(storage.join(directory, "ckpt-*.index")):
    number = index_file[:-len(".index")].rsplit("-", 1)[1]
    if number.isdigit():
      numbers.append(int(number))
  return [storage.join(directory, f"ckpt-{number}") for number in sorted(numbers, reverse=True)]


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
