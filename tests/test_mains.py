"""Every main, run as a process: bad input exits 2 with one line, which the manifests fail at once.

Absl exits 1 on a flag error, which the Jobs would retry; `cli.parse_flags` makes it 2. The
mains run side by side (each imports TensorFlow: slow on 2 cores).
"""

import os
import subprocess
import sys

import pytest

from tests.test_config import COMMANDS

TIMEOUT_SECONDS = 300


def _run_all(commands):
  """{name: (exit code, stderr)} of `python -m trainer.<main> <args>` for each (name, main, args)."""
  environment = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}
  processes = {name: subprocess.Popen(  # pylint: disable=consider-using-with
      [sys.executable, "-m", f"trainer.{main}", *args], stdout=subprocess.DEVNULL,
      stderr=subprocess.PIPE, text=True, env=environment) for name, main, args in commands}
  return {name: (process.wait(TIMEOUT_SECONDS), process.stderr.read())
          for name, process in processes.items()}


def _error_lines(stderr):
  """The lines a main printed as its error (absl and TensorFlow log other lines)."""
  return [line for line in stderr.splitlines() if line.startswith("error:")]


@pytest.mark.slow
def test_a_misspelt_flag_exits_2_with_one_line_from_every_main(tmp_path):
  """`--workdri` (for --workdir) is refused by every main: exit 2, one error line naming it."""
  results = _run_all([(main, main, ["--workdri=/tmp/x"]) for main in COMMANDS])
  for main, (code, stderr) in results.items():
    assert code == 2, f"{main}: exit {code}\n{stderr[-2000:]}"
    (line,) = _error_lines(stderr)
    assert "workdri" in line, f"{main}: {line}"
    assert "Traceback" not in stderr, f"{main}:\n{stderr[-2000:]}"


@pytest.mark.slow
@pytest.mark.parametrize("main,args", [
    ("train", ["--workdir={tmp}/runs/", "--synthetic_data"]),
    ("retrain", ["--runs_dir={tmp}/runs", "--run_name=", "--data_cache={tmp}/data",
                 "--production={tmp}/production"]),
    ("preflight", ["--workdir={tmp}/runs/"]),
])
def test_an_empty_run_folder_name_exits_2_naming_the_jobset_version(tmp_path, main, args):
  """A run folder ending in "/" ($(RUN_ID) expanded to nothing) is refused before any work."""
  ((code, stderr),) = _run_all([(main, main, [a.format(tmp=tmp_path) for a in args])]).values()
  assert code == 2, stderr[-2000:]
  (line,) = _error_lines(stderr)
  assert "the run folder's name, its last part, is empty" in line
  assert "JobSet v0.9.0" in line
  assert not list(tmp_path.rglob("*")), "nothing may be written"
