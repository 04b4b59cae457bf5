"""TensorBoard output: a run folder per split, the run's hyperparameters, and a profiler window.

As Keras' TensorBoard callback lays it out, every split writes the same tags (`loss`, `accuracy`,
...) into its own run folder, so that TensorBoard overlays the train and validation curves on
one chart:

  <logdir>/train/, <logdir>/validation/, <logdir>/test/   scalars of each split
  <logdir>/                                               hparams (the HParams dashboard)
  <logdir>/plugins/profile/                               a `Profiler` trace

The HParams dashboard reads a run's metrics from `<session>/validation` and so on, where the
session is the run of the hparams: with `tensorboard --logdir` a parent of `logdir` (runs compared)
it finds them; with `--logdir` the `logdir` itself, the session is "." and TensorBoard 2.21 looks
in "./validation", which it does not find: it lists the hparams without metrics.

  with Summaries(logdir, enabled=chief) as summaries:
    summaries.hparams(config, config_lib.METRIC_NAMES)
    summaries.scalars("train", {"loss": 0.69, "accuracy": 0.5}, step=50)
"""

import dataclasses
import numbers

from tensorboard.plugins.hparams import api as hp
import tensorflow as tf

from trainer import config as config_lib
from trainer import storage

SPLITS = ("train", "validation", "test")
TRAIN_METRICS = ("loss", "accuracy")  # The train metrics the HParams dashboard lists.


class _Closing:
  """Context manager use: the object is closed at the end of the `with` block."""

  def __enter__(self):
    """Returns the object itself."""
    return self

  def __exit__(self, *exc_info):
    """Closes the object."""
    self.close()


class Summaries(_Closing):
  """The summary writers of a run: one per split, each in its own run folder of `logdir`."""

  def __init__(self, logdir, enabled):
    """Writes under `logdir` when enabled (on the chief); else every method does nothing.

    Args:
      logdir: the TensorBoard folder (local or gs://).
      enabled: whether this process writes summaries.
    """
    self.logdir = logdir
    self.enabled = enabled
    self._writers = {}  # Run folder (its names below `logdir`) -> writer.

  def _writer(self, *names):
    """The writer of the run folder `logdir/<names>`, created on its first use."""
    if names not in self._writers:
      self._writers[names] = tf.summary.create_file_writer(storage.join(self.logdir, *names))
    return self._writers[names]

  def scalars(self, split, values, step):
    """Writes every numeric value of `values` as a scalar of the split's run.

    Args:
      split: one of `SPLITS`.
      values: dict of tag -> value; values that are not numbers are skipped.
      step: the training step the values belong to.
    """
    if not self.enabled:
      return
    if split not in SPLITS:
      raise ValueError(f"split={split!r}: choose one of {SPLITS}.")
    with self._writer(split).as_default(step=step):
      for name, value in values.items():
        if isinstance(value, numbers.Real):
          tf.summary.scalar(name, value)

  def hparams(self, config, metric_names):
    """Writes the resolved config and its metrics for TensorBoard's HParams dashboard.

    Args:
      config: a `config.Config`; its fields are written as `<section>.<field>`.
      metric_names: the evaluation metrics (tags of the validation and test runs) to list.
    """
    if not self.enabled:
      return
    values = flat_hparams(config)
    metrics = [hp.Metric(name, group=split, display_name=f"{split} {name}")
               for split, names in (("validation", metric_names), ("test", metric_names),
                                    ("train", TRAIN_METRICS))
               for name in names]
    with self._writer().as_default():  # The run of the logdir itself.
      hp.hparams_config(hparams=[hp.HParam(name) for name in values], metrics=metrics)
      hp.hparams(values)

  def close(self):
    """Flushes and closes the writers."""
    for writer in self._writers.values():
      writer.close()
    self._writers.clear()


def flat_hparams(config):
  """The fields of a `config.Config` as {"<section>.<field>": value}, tuples as "a,b" strings."""
  return {name: ",".join(map(str, value)) if isinstance(value, tuple) else value
          for name, value in config_lib.flattened(dataclasses.asdict(config)).items()}


class Profiler(_Closing):
  """Traces steps START to END (1-based, both included) with the TensorFlow profiler.

  Like Keras' `profile_batch`: the trace goes to `<logdir>/plugins/profile/`, which
  TensorBoard's Profile tab shows. Call `before_step` and `after_step` around every step.
  """

  def __init__(self, logdir, profile_steps, enabled):
    """Traces `profile_steps` into `logdir` when enabled (on the chief).

    Args:
      logdir: the TensorBoard folder (local or gs://).
      profile_steps: () for no trace, or (START, END) with START <= END.
      enabled: whether this process traces.
    """
    self.logdir = logdir
    self.profile_steps = tuple(profile_steps) if enabled else ()
    self.active = False

  def before_step(self, step):
    """Starts the trace when `step`, the step about to run, is START."""
    if self.profile_steps and step == self.profile_steps[0]:
      tf.profiler.experimental.start(self.logdir)
      self.active = True

  def after_step(self, step):
    """Stops the trace when `step`, the step just run, is END."""
    if self.active and step == self.profile_steps[1]:
      self.close()

  def close(self):
    """Stops and writes the trace if it is running (the run ended inside the range)."""
    if self.active:
      self.active = False
      tf.profiler.experimental.stop()
