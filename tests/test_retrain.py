"""The scheduled retraining command end to end on tiny generated data with the `local` preset."""

import dataclasses
import json
import os
import subprocess
import sys

import pytest

from tests import synthetic_imdb
from trainer import config as config_lib
from trainer.data import sources
from trainer.training import retrain_lib

LOCAL = config_lib.override(config_lib.get_preset("local"), max_length=40, eval_batch_size=32,
                            deterministic=True)


def test_scheduled_command_prepares_trains_exports_and_promotes(tmp_path, aclimdb_tarball):
  """One command: the first run prepares and is promoted into an empty production folder."""
  root = tmp_path / "scheduled"
  completed = subprocess.run(
      [sys.executable, "-m", "trainer.retrain", f"--input={aclimdb_tarball}", "--preset=local",
       f"--data_cache={root / 'data'}", f"--runs_dir={root / 'runs'}", "--run_name=first",
       f"--production={root / 'production'}"],
      capture_output=True, text=True, timeout=300, check=False)
  assert completed.returncode == 0, completed.stderr[-3000:]
  summary = json.loads((root / "runs" / "first" / retrain_lib.SUMMARY_FILE).read_text())
  assert summary["prepared"] and summary["decision"]["promoted"]
  assert os.path.exists(os.path.join(summary["export"], "saved_model.pb"))
  assert summary["decision"]["candidate_test_accuracy"] == pytest.approx(
      summary["test"]["accuracy"])
  current = json.loads((root / "production" / "CURRENT.json").read_text())
  assert os.path.exists(os.path.join(current["path"], "saved_model.pb"))


def test_source_change_prepares_again_and_a_rerun_resumes(tmp_path, corpus_files):
  """Same source: the prepared data is reused; a changed source gets its own folder."""
  tarball = synthetic_imdb.write_tarball(corpus_files, str(tmp_path / "a.tar.gz"))
  cache, production = str(tmp_path / "data"), str(tmp_path / "production")

  def run(source, name):
    """One scheduled run on the tarball `source`."""
    return retrain_lib.retrain(LOCAL, sources.read_tarball(source), cache,
                               str(tmp_path / "runs" / name), production, 0.0)

  first = run(tarball, "1")
  again = run(tarball, "2")
  assert first["prepared"] and not again["prepared"]
  assert again["data_dir"] == first["data_dir"]
  # Same data, same seed, deterministic: no better than production, so refused.
  assert not again["decision"]["promoted"]
  assert again["decision"]["production_test_accuracy"] == pytest.approx(
      first["test"]["accuracy"])
  changed = synthetic_imdb.generate(reviews_per_folder=24, reviews_per_movie=4, seed=5)
  other = run(synthetic_imdb.write_tarball(changed, str(tmp_path / "b.tar.gz")), "3")
  assert other["prepared"] and other["data_dir"] != first["data_dir"]
  decisions = os.listdir(os.path.join(production, "decisions"))
  assert len(decisions) == 3
