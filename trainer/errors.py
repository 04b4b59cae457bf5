"""The errors entry points report without a traceback, and their exit codes."""

USER_ERROR_EXIT_CODE = 2
REGRESSION_EXIT_CODE = 3  # Retraining: the candidate is significantly worse than production.
DATA_DRIFT_EXIT_CODE = 4  # Retraining: the new data moved beyond the drift thresholds.
SERVING_GATE_EXIT_CODE = 5  # Retraining: the candidate failed to load or answered too slowly.
RESTART_EXIT_CODE = 42  # Preempted after saving: restart the job (the manifests treat it so).
PEERS_MISSING_EXIT_CODE = 43  # The other workers never came: retry within the Job's backoffLimit.


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
  """The job saved a checkpoint after SIGTERM and must exit to be restarted."""
  exit_code = RESTART_EXIT_CODE

  def __init__(self, step):
    """Records the step that was saved."""
    super().__init__(f"Preempted (SIGTERM): saved a checkpoint at step {step}; exiting with "
                     f"code {RESTART_EXIT_CODE} so that the job is restarted and resumes there.")
    self.step = step


class PeerLost(JobStopped):
  """Another worker of a multi-worker job died or stopped answering: restart them all."""
  exit_code = RESTART_EXIT_CODE

  def __init__(self, error):
    """Describes the TensorFlow error that revealed it."""
    super().__init__(f"Lost another worker ({type(error).__name__}: {first_line(error)}). "
                     f"Exiting with code {RESTART_EXIT_CODE}: restart every worker; they resume "
                     "from the last checkpoint.")


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
  exit_code = PEERS_MISSING_EXIT_CODE


class DataNotReady(JobStopped):
  """A worker waited in vain for the chief to prepare the dataset: retry the job."""
  exit_code = PEERS_MISSING_EXIT_CODE
