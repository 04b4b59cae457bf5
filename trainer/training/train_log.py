"""The training log: a line every few steps, TensorBoard scalars, and the NaN stop."""

import contextlib
import math
import time

from absl import logging
import keras

from trainer.errors import UserInputError

TRAIN_SCALARS = ("loss", "accuracy", "examples_per_s", "input_wait_fraction", "learning_rate")


class TrainingDiverged(UserInputError):
  """The loss became NaN or infinite."""


class TrainLog:
  """Accumulates step statistics between log lines and writes the line and summaries.

  Its rates (examples/s, input wait, ETA) count training time only: the loop evaluates and saves
  checkpoints inside `excluded()`.
  """

  def __init__(self, total_steps, start_step, global_batch_size, show_progress_bar, summaries):
    """Starts the first interval at `start_step`; `summaries` (a `summaries.Summaries`) writes."""
    self.total_steps = total_steps
    self.summaries = summaries
    self.global_batch_size = global_batch_size
    self.progress_bar = keras.utils.Progbar(total_steps) if show_progress_bar else None
    self.restart(start_step)

  def restart(self, step):
    """Starts a new interval at `step`, forgetting the statistics since the last flush."""
    self.interval_start_step = step
    self.interval_start_time = time.perf_counter()
    self.input_seconds = self.excluded_seconds = 0.0
    self.loss_sum = self.correct = 0

  def add(self, step, loss_sum, correct, input_seconds):
    """Adds one step's (device) statistics without waiting for them."""
    self.loss_sum += loss_sum
    self.correct += correct
    self.input_seconds += input_seconds
    if self.progress_bar:
      self.progress_bar.update(step)

  @contextlib.contextmanager
  def excluded(self):
    """The time spent inside the block (evaluating, saving) is left out of the rates."""
    start = time.perf_counter()
    try:
      yield
    finally:
      self.excluded_seconds += time.perf_counter() - start

  def flush(self, step, learning_rate):
    """Logs the interval ending at `step`; returns its statistics. Raises on a NaN loss."""
    seconds = time.perf_counter() - self.interval_start_time - self.excluded_seconds
    steps = step - self.interval_start_step
    examples = steps * self.global_batch_size
    loss = float(self.loss_sum) / max(examples, 1)
    if not math.isfinite(loss):
      raise TrainingDiverged(
          f"The training loss became {loss} between steps {self.interval_start_step} and {step}. "
          "The last good checkpoint is kept. Lower --learning_rate, set --clip_norm, or use "
          "--precision=float32; --debug finds the first op that goes non-finite.")
    stats = {"step": step, "loss": round(loss, 5),
             "accuracy": round(float(self.correct) / max(examples, 1), 5),
             "examples_per_s": round(examples / max(seconds, 1e-9), 1),
             "input_wait_fraction": round(self.input_seconds / max(seconds, 1e-9), 4),
             "learning_rate": learning_rate}
    eta = (self.total_steps - step) * seconds / max(steps, 1)
    logging.info("train | step: %d/%d | loss: %.4f | accuracy: %.4f | steps/sec: %.2f | "
                 "examples/s: %.1f | input wait: %.1f%% | lr: %.3g | ETA: %s", step,
                 self.total_steps, stats["loss"], stats["accuracy"], steps / max(seconds, 1e-9),
                 stats["examples_per_s"],
                 100 * stats["input_wait_fraction"], learning_rate,
                 time.strftime("%H:%M:%S", time.gmtime(eta)))
    self.summaries.scalars("train", {name: stats[name] for name in TRAIN_SCALARS}, step)
    self.restart(step)
    return stats


def closing_summary(results, workdir):
  """The lines a finished run ends with: what was tested, where the results are, what next.

  Args:
    results: what `train_lib.train_and_evaluate` returned.
    workdir: the run's folder.
  """
  lines = [f"Trained steps {results['start_step']}-{results['step']} of "
           f"{results['total_steps']} in {results['wall_seconds']:g} s "
           f"({results['strategy']['replicas']} replicas)."]
  if "test" in results:
    test = results["test"]
    chosen = ("the best validation" if results["config"]["run"]["export"] == "best"
              else "the final weights")
    lines.append(f"Tested the weights of step {results['tested_step']} ({chosen}) on "
                 f"{test['examples']:,} test reviews: accuracy {test['accuracy']:.4f}, AUC "
                 f"{test['auc']:.4f} (validation accuracy {results['validation']['accuracy']:.4f}).")
  lines.append(f"Results: {workdir}/metrics.json; curves: tensorboard --logdir={workdir}")
  if results.get("export"):
    lines += [f"Export: {results['export']}",
              f'Try it: python -m trainer.predict --model={results["export"]} "A wonderful, '
              'moving film."',
              f"Promote it: python -m trainer.promote --candidate={results['export']} "
              "--production=<production folder> --input=<the aclImdb tarball>"]
  return lines


def log_evaluation(summaries, split, results, step):
  """Logs an evaluation of `split` at `step` and writes its scalars through `summaries`."""
  logging.info("%s | step: %d | %s", split, step, results)
  summaries.scalars(split, results, step)
