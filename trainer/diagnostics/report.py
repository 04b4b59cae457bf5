"""What a preflight check found, running one check, and the one screen that reports them all."""

import dataclasses

from trainer import errors

PASSED, FAILED, NOT_RUN = "ok", "FAILED", "not run"


class CannotRunHere(Exception):
  """The check needs what this machine lacks (a GPU, a second worker); the message says what."""


class CheckFailed(Exception):
  """The check ran and found a problem; the message says which, and what to do."""


@dataclasses.dataclass(frozen=True)
class Outcome:
  """What one check found: its name, PASSED, FAILED or NOT_RUN, and a line of detail."""
  name: str
  status: str
  detail: str


def run_check(name, check):
  """Runs `check()`, which returns a line of detail when it passes; returns its `Outcome`.

  CannotRunHere makes the outcome NOT_RUN; CheckFailed, or any other exception (a check must
  never stop the others), FAILED.
  """
  try:
    return Outcome(name, PASSED, check())
  except CannotRunHere as e:
    return Outcome(name, NOT_RUN, str(e))
  except CheckFailed as e:
    return Outcome(name, FAILED, str(e))
  except Exception as e:  # pylint: disable=broad-except  (reported as the check's failure)
    return Outcome(name, FAILED, f"{type(e).__name__}: {errors.first_line(e)}")


def failures(outcomes):
  """The names of the checks that failed."""
  return [outcome.name for outcome in outcomes if outcome.status == FAILED]


def _counted(names, what):
  """How many checks did `what`, and which: e.g. 2 failed (gpus, workdir)."""
  return f"{len(names)} {what}" + (f" ({', '.join(names)})" if names else "")


def render(header, outcomes):
  """The screen: the header, one line per check, and the verdict.

  Args:
    header: who ran the checks, and where.
    outcomes: the `Outcome`s, in the order they ran.
  """
  width = max(len(outcome.name) for outcome in outcomes)
  lines = [header] + [f"  {outcome.status:<8} {outcome.name:<{width}}  {outcome.detail}"
                      for outcome in outcomes]
  verdicts = [_counted([o.name for o in outcomes if o.status == status], what)
              for status, what in ((PASSED, "passed"), (FAILED, "failed"),
                                   (NOT_RUN, "could not run here"))]
  return "\n".join([*lines, f"preflight: {', '.join(verdicts)}."])
