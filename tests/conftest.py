"""Shared fixtures: small generated IMDB corpora in the aclImdb, tarball and prepared formats."""

import os
import socket

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from gcp_storage_emulator import server as emulator_server  # pylint: disable=g-import-not-at-top,wrong-import-position
import pytest  # pylint: disable=g-import-not-at-top,wrong-import-position
import tensorflow as tf  # pylint: disable=g-import-not-at-top,wrong-import-position

from trainer.config import DataConfig  # pylint: disable=g-import-not-at-top,wrong-import-position
from trainer.data import prepare  # pylint: disable=g-import-not-at-top,wrong-import-position
from trainer.data import sources  # pylint: disable=g-import-not-at-top,wrong-import-position
from trainer.testing import synthetic_imdb  # pylint: disable=g-import-not-at-top,wrong-import-position



def pytest_configure(config):
  """Registers the `slow` marker: the fast loop is `pytest -m "not slow"`."""
  config.addinivalue_line("markers", "slow: trains, spawns processes or runs Beam (left out of "
                          "the fast loop, pytest -m 'not slow'; CI runs everything)")


# Two logical CPU devices, to test MirroredStrategy without GPUs; set before TensorFlow starts.
tf.config.set_logical_device_configuration(
    tf.config.list_physical_devices("CPU")[0], [tf.config.LogicalDeviceConfiguration()] * 2)


@pytest.fixture(scope="session")
def mirrored():
  """The one MirroredStrategy over the 2 logical CPUs that every test shares.

  Every MirroredStrategy of a process numbers its collectives from the same keys, so a second
  one over the same devices can collide with the first one's collectives.
  """
  return tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])


@pytest.fixture
def emulator(monkeypatch):
  """gcp-storage-emulator on 127.0.0.1, named by STORAGE_EMULATOR_HOST (no preconditions)."""
  with socket.socket() as probe:
    probe.bind(("127.0.0.1", 0))
    port = probe.getsockname()[1]
  server = emulator_server.create_server("127.0.0.1", port, in_memory=True)
  server.start()
  monkeypatch.setenv("STORAGE_EMULATOR_HOST", f"http://127.0.0.1:{port}")
  yield
  server.stop()


@pytest.fixture(scope="session")
def corpus_files():
  """Files of a small aclImdb tree: 24 reviews per folder, 4 per movie."""
  return synthetic_imdb.generate(reviews_per_folder=24, reviews_per_movie=4, seed=1)


@pytest.fixture
def aclimdb_tarball(tmp_path, corpus_files):
  """The small corpus as aclImdb_v1.tar.gz."""
  return synthetic_imdb.write_tarball(corpus_files, str(tmp_path / "aclImdb_v1.tar.gz"))


@pytest.fixture
def aclimdb_dir(tmp_path, corpus_files):
  """The small corpus extracted: the path of its aclImdb folder."""
  return synthetic_imdb.write_directory(corpus_files, str(tmp_path / "extracted"))


@pytest.fixture(scope="session")
def prepared_dir(tmp_path_factory, corpus_files):
  """The small corpus prepared into 4 shards per split (read-only for tests)."""
  root = tmp_path_factory.mktemp("prepared")
  tarball = synthetic_imdb.write_tarball(corpus_files, str(root / "aclImdb_v1.tar.gz"))
  output_dir = str(root / "data")
  prepare.prepare(sources.read_tarball(tarball), output_dir,
                  DataConfig(vocab_size=40, num_shards=4, validation_fraction=0.25))
  return output_dir


@pytest.fixture(scope="session")
def learnable_dir(tmp_path_factory):
  """A prepared corpus to learn from: 100 reviews per folder, 3 shards per split (uneven over 2)."""
  root = tmp_path_factory.mktemp("learnable")
  files = synthetic_imdb.generate(reviews_per_folder=100, reviews_per_movie=5, median_words=30,
                                  seed=2)
  output_dir = str(root / "data")
  prepare.prepare(sources.read_tarball(synthetic_imdb.write_tarball(
      files, str(root / "aclImdb_v1.tar.gz"))), output_dir, DataConfig(num_shards=3))
  return output_dir
