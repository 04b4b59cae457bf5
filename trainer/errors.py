"""The errors entry points report without a traceback, and their exit codes."""

USER_ERROR_EXIT_CODE = 2
RESTART_EXIT_CODE = 42  # Preempted after saving: restart the job (the manifests treat it so).


def first_line(error):
  """The first non-empty line of an exception's message, for one-line reports."""
  lines = str(getattr(error, "message", None) or error).strip().splitlines()
  return lines[0] if lines else ""


class UserInputError(Exception):
  """Input the user can fix (a path, a file, a flag); the message says how."""


class Preempted(Exception):
  """The job saved a checkpoint after SIGTERM and must exit to be restarted."""

  def __init__(self, step):
    """Records the step that was saved."""
    super().__init__(f"Preempted (SIGTERM): saved a checkpoint at step {step}; exiting with "
                     f"code {RESTART_EXIT_CODE} so that the job is restarted and resumes there.")
    self.step = step


class PeerLost(Exception):
  """Another worker of a multi-worker job died or stopped answering: restart them all."""

  def __init__(self, error):
    """Describes the TensorFlow error that revealed it."""
    super().__init__(f"Lost another worker ({type(error).__name__}: {first_line(error)}). "
                     f"Exiting with code {RESTART_EXIT_CODE}: restart every worker; they resume "
                     "from the last checkpoint.")

