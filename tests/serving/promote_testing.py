"""Helpers of the promote tests: fake exports, local and fake-GCS productions, and their readers."""

import collections
import json
import os
import shutil

from google.api_core import exceptions
import numpy as np
import pytest

from tests import fake_gcs
from trainer.serving import promote

Export = collections.namedtuple("Export", ["location", "files"])


FAKE_REVIEWS = 2000  # Held-out reviews the fake assessor scores fake exports on.
FAKE_MOVIES = 200  # Of 10 reviews each.
SERVED = {"loaded": True, "error": None, "latency_ms_p50": 3.0, "latency_ms_p99": 5.0}


def write_export(directory, accuracy, version="1795903751", shift=0, serving=None):
  """Writes a fake export (no real model); returns {name: bytes}.

  `FakeAssessor` finds it right on the first `accuracy` share of its reviews, rolled by `shift`
  places (two exports with different shifts disagree on some reviews both ways), and reports
  `serving` (default: served in 5 ms) for it.
  """
  scores = {"accuracy": accuracy, "loss": 0.3, "auc": 0.95, "precision": 0.9, "recall": 0.88}
  metadata = {"format": "imdb-bilstm-export", "format_version": 1, "version": version,
              "created": "2026-11-28T22:00:00Z", "step": 2110, "test": scores,
              "validation": scores, "config": {}, "versions": {},
              "data": {"fingerprint": "f", "vocab_sha256": "v"},
              "fake": {"shift": shift, "serving": serving or SERVED}}
  files = {"export_metadata.json": json.dumps(metadata).encode(),
           "saved_model.pb": f"graph of a model scoring {accuracy}".encode(),
           "variables/variables.index": b"index",
           "variables/variables.data-00000-of-00001": os.urandom(256),
           "vocab.txt": b"<pad>\n<unk>\nthe\n"}
  for name, data in files.items():
    path = os.path.join(directory, *name.split("/"))
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "wb") as f:
      f.write(data)
  return files


class FakeAssessor:
  """Scores fake exports from what `write_export` put in their metadata.

  Review i is about movie i % FAKE_MOVIES, so that a run of neighbouring reviews spans as many
  movies (as independent reviews would); with `movies_in_runs`, about movie i // 10, so that
  neighbours share a movie.
  """

  data = {"fingerprint": "fake-held-out", "examples": FAKE_REVIEWS, "kind": "fake"}

  def __init__(self, movies_in_runs=False):
    """The movies of the reviews: spread (default) or in runs of 10."""
    reviews = np.arange(FAKE_REVIEWS)
    self.clusters = reviews // 10 if movies_in_runs else reviews % FAKE_MOVIES

  @staticmethod
  def _metadata(model_dir):
    """The metadata of a local fake export."""
    with open(os.path.join(model_dir, "export_metadata.json"), encoding="utf-8") as f:
      return json.load(f)

  def serving(self, model_dir):
    """The serving report written into the fake export."""
    return self._metadata(model_dir)["fake"]["serving"]

  def correct_answers(self, model_dir):
    """Right on the first `accuracy` share of the reviews, rolled by the export's shift."""
    metadata = self._metadata(model_dir)
    right = np.arange(FAKE_REVIEWS) < round(metadata["test"]["accuracy"] * FAKE_REVIEWS)
    return np.roll(right, metadata["fake"]["shift"])


def read_tree(directory):
  """{name relative to `directory`: bytes} of every file under it."""
  tree = {}
  for folder, _, files in os.walk(directory):
    for name in files:
      path = os.path.join(folder, name)
      with open(path, "rb") as f:
        tree[os.path.relpath(path, directory).replace(os.sep, "/")] = f.read()
  return tree


class LocalBackend:
  """Production and candidates in local folders."""

  def __init__(self, tmp_path):
    """Everything under `tmp_path`."""
    self.tmp_path = tmp_path
    self.production = str(tmp_path / "production")

  def candidate(self, name, accuracy, **kwargs):
    """A fake export named `name`."""
    location = str(self.tmp_path / "exports" / name)
    return Export(location, write_export(location, accuracy, **kwargs))

  def promote(self, candidate, assessor=None, **policy):
    """Calls promote.promote with this production, the (fake) assessor and `policy`."""
    return promote.promote(candidate, self.production, assessor or FakeAssessor(),
                           promote.Policy(**policy))

  def rollback(self, model_id=None):
    """Calls promote.rollback on this production."""
    return promote.rollback(self.production, model_id, serving=FakeAssessor().serving)

  def files(self):
    """{name: bytes} of every file in production."""
    return read_tree(self.production)

  def location(self, name):
    """The path of a production file."""
    return os.path.join(self.production, *name.split("/"))

  def fail_model_copies_after_one_file(self, monkeypatch):
    """Makes the copy of a model fail after its first file."""
    copied = []
    copy2 = shutil.copy2

    def copy_one_then_fail(source, destination):
      """shutil.copy2, failing from the second file on."""
      if copied:
        raise OSError("disk full (simulated)")
      copied.append(source)
      return copy2(source, destination)

    monkeypatch.setattr(shutil, "copy2", copy_one_then_fail)


class GcsBackend:
  """Production in gs://production-bucket/imdb and candidates in gs://exports, on a fake client."""

  production = "gs://production-bucket/imdb"

  def __init__(self, tmp_path):
    """Local staging under `tmp_path`; objects in a fresh fake client."""
    self.tmp_path = tmp_path
    self.client = fake_gcs.FakeClient()

  def candidate(self, name, accuracy, **kwargs):
    """A fake export uploaded to gs://exports/<name>."""
    files = write_export(str(self.tmp_path / "staging" / name), accuracy, **kwargs)
    for relative, data in files.items():
      self.client.write("exports", f"{name}/{relative}", data, if_generation_match=0)
    return Export(f"gs://exports/{name}", files)

  def promote(self, candidate, **policy):
    """Calls promote.promote with this production, the fake client and assessor, `policy`."""
    return promote.promote(candidate, self.production, FakeAssessor(), promote.Policy(**policy),
                           gcs_client=self.client)

  def rollback(self, model_id=None):
    """Calls promote.rollback on this production with the fake client."""
    return promote.rollback(self.production, model_id, serving=FakeAssessor().serving,
                            gcs_client=self.client)

  def files(self):
    """{name: bytes} of every object in production."""
    return self.client.files("production-bucket", "imdb/")

  def location(self, name):
    """The URL of a production object."""
    return f"{self.production}/{name}"

  def fail_model_copies_after_one_file(self, monkeypatch):
    """Makes the copy of a model fail after its first object."""
    del monkeypatch  # The fake client has its own hook.
    copied = []

    def fail_after_one_model_file(name):
      """Lets one write under models/ through, then fails."""
      if "/models/" in name:
        if copied:
          raise exceptions.ServiceUnavailable("network down (simulated)")
        copied.append(name)

    self.client.before_write = fail_after_one_model_file


@pytest.fixture(params=["local", "gcs"])
def backend(request, tmp_path):
  """Each test on a local production folder and on a GCS one."""
  return {"local": LocalBackend, "gcs": GcsBackend}[request.param](tmp_path)


def pointer(files):
  """The parsed CURRENT.json among production files."""
  return json.loads(files["CURRENT.json"])


def decisions(files):
  """The logged decision records among production files, oldest first."""
  return [json.loads(data) for name, data in sorted(files.items())
          if name.startswith("decisions/")]


def model(files, model_id):
  """{name: bytes} of the copy of a model among production files."""
  prefix = f"models/{model_id}/"
  return {name[len(prefix):]: data for name, data in files.items() if name.startswith(prefix)}


def model_ids(files):
  """The ids of the models kept in production."""
  return {name.split("/")[1] for name in files if name.startswith("models/")}


def without_decisions(files):
  """Production files except the decision log."""
  return {name: data for name, data in files.items() if not name.startswith("decisions/")}
