"""The error type for bad user input, and how entry points report it."""

import sys

from absl import app


class UserInputError(Exception):
  """Input the user can fix (a path, a file, a flag); the message says how."""


def run(main):
  """Runs an absl `main`; a UserInputError ends it with its message and exit code 2."""

  def main_reporting_user_errors(argv):
    """Calls `main`, printing a UserInputError as one clear line instead of a traceback."""
    try:
      main(argv)
    except UserInputError as e:
      print(f"error: {e}", file=sys.stderr)
      sys.exit(2)

  app.run(main_reporting_user_errors)
