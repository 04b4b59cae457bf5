"""The errors entry points report without a traceback, and their exit codes."""

import re

USER_ERROR_EXIT_CODE = 2
REGRESSION_EXIT_CODE = 3  # Retraining: the candidate is significantly worse than production.
DATA_DRIFT_EXIT_CODE = 4  # Retraining: the new data moved beyond the drift thresholds.
SERVING_GATE_EXIT_CODE = 5  # Retraining: the candidate failed to load or answered too slowly.
RESTART_EXIT_CODE = 42  # Preempted after saving: restart the job (the manifests treat it so).
# Something that may pass (peers that never came, storage unavailable): retry, counted against
# the Job's backoffLimit.
RETRY_EXIT_CODE = 43


def from_other_workers(error):
  """Whether a TensorFlow error comes from the cluster (a collective op, the coordination
  service, another task), not from this process's own work such as its storage.

  Eager ops run ahead: a collective that failed in one step is reported at the next point that
  waits for results, which may be a read of data or a checkpoint save. Its message tells.
  """
  return bool(re.search(r"collective|coordination|/job:", str(error), re.IGNORECASE))


def first_line(error):
  """The first non-empty line of an exception's message, for one-line reports."""
  lines = str(getattr(error, "message", None) or error).strip().splitlines()
  return lines[0] if lines else ""


class UserInputError(Exception):
  """Input the user can fix (a path, a file, a flag); the message says how."""


class JobStopped(Exception):
  """An end of a run that is not a crash: entry points print it and exit with `exit_code`."""
  exit_code = 1


class Preempted(JobStopped):
  """The job got SIGTERM, saved a checkpoint (unless its state was not finite), and must exit."""
  exit_code = RESTART_EXIT_CODE

  def __init__(self, step, saved=True):
    """Records the step that was saved, or that could not be (`saved` False)."""
    if saved:
      message = (f"Preempted (SIGTERM): saved a checkpoint at step {step}; exiting with code "
                 f"{RESTART_EXIT_CODE} so that the job is restarted and resumes there.")
    else:
      message = (f"Preempted (SIGTERM) at step {step}, whose state is not finite: not saved. "
                 f"Exiting with code {RESTART_EXIT_CODE}; restarted, the job resumes from its "
                 "last good checkpoint and recovers from the divergence there.")
    super().__init__(message)
    self.step = step


class PeerLost(JobStopped):
  """Another worker of a multi-worker job died or stopped answering: restart them all."""
  exit_code = RESTART_EXIT_CODE

  def __init__(self, error):
    """Describes the TensorFlow error that revealed it."""
    super().__init__(f"Lost another worker ({type(error).__name__}: {first_line(error)}). "
                     f"Exiting with code {RESTART_EXIT_CODE}: restart every worker; they resume "
                     "from the last checkpoint.")


class NothingLeft(JobStopped):
  """This worker has no part in what is left of the run (its chief finishes it): success."""
  exit_code = 0


class DataDrift(JobStopped):
  """Retraining refused: the new data differs from production's beyond the thresholds."""
  exit_code = DATA_DRIFT_EXIT_CODE


class Regression(JobStopped):
  """Retraining's candidate is significantly worse than production: an alert, not promoted."""
  exit_code = REGRESSION_EXIT_CODE


class ServingGateFailed(JobStopped):
  """The candidate did not load, answer or answer fast enough in a fresh process."""
  exit_code = SERVING_GATE_EXIT_CODE


class PeersMissing(JobStopped):
  """The other workers of a cluster never answered in time: retry the job within its limit."""
  exit_code = RETRY_EXIT_CODE


class StorageUnavailable(JobStopped):
  """Storage failed in a way that may pass (unavailable, timed out, its retries ran out)."""
  exit_code = RETRY_EXIT_CODE


class NoProgress(JobStopped):
  """The run was started again and again without saving a new checkpoint: give up, loudly."""
  exit_code = USER_ERROR_EXIT_CODE


class DataNotReady(JobStopped):
  """A worker waited in vain for the chief to prepare the dataset: retry the job."""
  exit_code = RETRY_EXIT_CODE
