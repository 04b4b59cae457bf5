"""What the benchmarks share: where the real data is, and a prepared copy of it."""

import os
import subprocess
import sys
import time

from absl import flags

REPOSITORY = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPOSITORY)  # The generator of IMDB-like reviews lives with the tests.
from tests import synthetic_imdb  # pylint: disable=g-import-not-at-top,wrong-import-position
from trainer import storage  # pylint: disable=g-import-not-at-top,wrong-import-position
DEFAULT_DATA = os.path.normpath(
    os.path.join(REPOSITORY, "..", "shared", "data", "aclImdb_v1_labeled.tar.gz"))


def tarball_or_generated(tarball, workdir):
  """`tarball` when it exists, else a generated one of IMDB's size (and says so)."""
  if os.path.exists(tarball):
    return tarball
  print(f"{tarball} not found: generating 50,000 reviews instead.")
  return synthetic_imdb.write_tarball(
      synthetic_imdb.generate(reviews_per_folder=12500, reviews_per_movie=8, median_words=200),
      os.path.join(workdir, "generated_aclImdb.tar.gz"))


def define_data_flags():
  """--data (a tarball) and --data_dir (a prepared dataset), for benchmarks that train."""
  flags.DEFINE_string("data", DEFAULT_DATA, "aclImdb tarball; generated when missing.")
  flags.DEFINE_string("data_dir", None, "An already prepared dataset (skips --data).")


def prepared_data_dir(workdir):
  """--data_dir, or --data prepared into <workdir>/data."""
  if flags.FLAGS.data_dir:
    return flags.FLAGS.data_dir
  data_dir = os.path.join(workdir, "data")
  prepare(tarball_or_generated(flags.FLAGS.data, workdir), data_dir)
  return data_dir


def prepare(tarball, output_dir):
  """Runs `python -m trainer.prepare` on the tarball; returns its wall time in seconds."""
  start = time.perf_counter()
  subprocess.run([sys.executable, "-m", "trainer.prepare", f"--input={tarball}",
                  f"--output_dir={output_dir}"], check=True, cwd=REPOSITORY)
  return time.perf_counter() - start


def write_result(name, summary):
  """Writes a benchmark's summary to benchmarks/results/<name>, the file the docs cite."""
  folder = os.path.join(REPOSITORY, "benchmarks", "results")
  os.makedirs(folder, exist_ok=True)
  storage.write_json_atomically(os.path.join(folder, name), summary)
