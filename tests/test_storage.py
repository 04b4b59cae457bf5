"""Tests of trainer.storage: the atomic write, JSON files and the stores' compare-and-swap."""

import os
from unittest import mock

import pytest
import tensorflow as tf

from tests import fake_gcs
from trainer.errors import UserInputError
from trainer import storage


class Interrupted(Exception):
  """A failure in the middle of a write."""


def write_file(path, text):
  """Writes `text` to a local file."""
  with open(path, "w") as f:
    f.write(text)


def read_file(path):
  """The text of a local file."""
  with open(path) as f:
    return f.read()


# --- atomic_path.


def test_a_successful_block_replaces_the_file_only_at_its_end(tmp_path):
  """Until the block ends the old file is in place; then the new one, and no temporary name."""
  path = str(tmp_path / "data.txt")
  write_file(path, "old")
  with storage.atomic_path(path) as temporary_path:
    with tf.io.gfile.GFile(temporary_path, "w") as f:
      f.write("new")
    assert storage.final_name(temporary_path) == path and read_file(path) == "old"
  assert read_file(path) == "new" and os.listdir(tmp_path) == ["data.txt"]


@pytest.mark.parametrize("old", [None, "old"])
def test_a_failing_block_leaves_no_partial_file_and_no_temporary_one(tmp_path, old):
  """A block that raises leaves the final name as it was and removes what it had written."""
  path = str(tmp_path / "data.txt")
  if old:
    write_file(path, old)
  with pytest.raises(Interrupted):
    with storage.atomic_path(path) as temporary_path:
      write_file(temporary_path, "half of it")
      raise Interrupted()
  assert os.listdir(tmp_path) == (["data.txt"] if old else [])
  if old:
    assert read_file(path) == old


def test_a_failing_rename_keeps_the_old_file_and_removes_the_temporary_one(tmp_path, monkeypatch):
  """If the final rename fails, the error surfaces and the directory is as it was."""
  path = str(tmp_path / "data.txt")
  write_file(path, "old")
  monkeypatch.setattr(storage, "publish", mock.Mock(side_effect=OSError("disk full")))
  with pytest.raises(OSError, match="disk full"):
    storage.write_text_atomically(path, "new")
  assert os.listdir(tmp_path) == ["data.txt"] and read_file(path) == "old"


def test_a_tfrecord_file_written_by_tfrecordwriter_is_published_whole(tmp_path):
  """TFRecordWriter writes the temporary name; the records are read back under the final one."""
  path = str(tmp_path / "shard.tfrecord")
  with (storage.atomic_path(path) as temporary_path,
        tf.io.TFRecordWriter(temporary_path) as writer):
    for record in (b"a", b"b"):
      writer.write(record)
  assert list(tf.data.TFRecordDataset(path).as_numpy_iterator()) == [b"a", b"b"]
  assert os.listdir(tmp_path) == ["shard.tfrecord"]


def test_a_folder_replaces_the_old_folder_or_nothing_happens(tmp_path):
  """A folder written in the block replaces the old one; a failing block keeps the old one."""
  path = tmp_path / "export"
  path.mkdir()
  write_file(str(path / "old.txt"), "old")
  with pytest.raises(Interrupted):
    with storage.atomic_path(str(path)) as temporary_path:
      os.makedirs(os.path.join(temporary_path, "variables"))
      write_file(os.path.join(temporary_path, "variables", "half"), "half")
      raise Interrupted()
  assert os.listdir(tmp_path) == ["export"] and os.listdir(path) == ["old.txt"]
  with storage.atomic_path(str(path)) as temporary_path:
    os.makedirs(os.path.join(temporary_path, "variables"))
    write_file(os.path.join(temporary_path, "variables", "data"), "new")
  assert os.listdir(tmp_path) == ["export"]
  assert storage.relative_files(str(path)) == ["variables/data"]


def test_text_and_json_files_are_written_atomically_through_gfile(tmp_path):
  """write_text_atomically and write_json_atomically replace a file; read_json reads it back."""
  for directory in (str(tmp_path), "ram://storage_test"):
    path = storage.join(directory, "facts.json")
    storage.write_text_atomically(path, "[]")
    storage.write_json_atomically(path, {"b": 1, "a": [2]})
    assert storage.read_json(path) == {"a": [2], "b": 1}
    with tf.io.gfile.GFile(path) as f:
      assert f.read() == '{\n  "a": [\n    2\n  ],\n  "b": 1\n}\n'
    assert tf.io.gfile.listdir(directory) == ["facts.json"]


@pytest.mark.parametrize("data,message", [
    ("{not json", "is not valid JSON"),
    ("[1]", "holds no JSON object"),
])
def test_parse_json_object_names_the_location_and_the_fix(data, message):
  """Invalid JSON and JSON that is no object raise UserInputError ending in the fix."""
  with pytest.raises(UserInputError, match=f"^where {message}.*: do this$"):
    storage.parse_json_object(data, "where", "do this")


# --- Stores: the compare-and-swap, locally and on a fake GCS.


@pytest.fixture(params=["local", "gcs"])
def store(request, tmp_path):
  """An empty local store and an empty one on a fake GCS client."""
  if request.param == "local":
    return storage.open_store(str(tmp_path / "store"))
  return storage.open_store("gs://bucket/prefix", fake_gcs.FakeClient())


def test_replace_if_swaps_only_what_was_read(store):
  """A write with the token of the last read wins; one with a stale token changes nothing."""
  data, missing = store.read_versioned("CURRENT.json")
  assert data is None
  assert store.replace_if("CURRENT.json", b"first", missing)
  data, first = store.read_versioned("CURRENT.json")
  assert data == b"first"
  assert not store.replace_if("CURRENT.json", b"stale", missing)
  assert store.replace_if("CURRENT.json", b"second", first)
  assert not store.replace_if("CURRENT.json", b"stale", first)
  assert store.read_versioned("CURRENT.json")[0] == b"second"


def test_files_and_trees(store, tmp_path):
  """write_new, put_tree, list_files, local_copy and delete_tree agree on "/"-separated names."""
  local = tmp_path / "local"
  (local / "variables").mkdir(parents=True)
  write_file(str(local / "saved_model.pb"), "graph")
  write_file(str(local / "variables" / "data"), "weights")
  store.write_new("decisions/1.json", b"{}")
  store.put_tree(str(local), "models/m")
  assert store.list_files("models") == ["models/m/saved_model.pb", "models/m/variables/data"]
  assert "decisions/1.json" in store.list_files()
  assert store.location("models/m").endswith(os.path.join("models", "m"))
  with store.local_copy() as copy:
    assert read_file(os.path.join(copy, "models", "m", "variables", "data")) == "weights"
  store.delete_tree("models/m")
  assert store.list_files("models") == []


def test_a_failed_local_tree_copy_leaves_nothing(tmp_path, monkeypatch):
  """put_tree into a local store publishes the folder whole, or leaves no trace of it."""
  local = tmp_path / "local"
  local.mkdir()
  for name in ("a", "b"):
    write_file(str(local / name), name)
  store = storage.open_store(str(tmp_path / "store"))
  store.write_new("kept", b"kept")

  def fail(source, destination):
    """Fails like a full disk."""
    raise OSError("disk full (simulated)")

  monkeypatch.setattr(storage.shutil, "copy2", fail)
  with pytest.raises(OSError, match="simulated"):
    store.put_tree(str(local), "models/m")
  assert store.list_files() == ["kept"] and os.listdir(tmp_path / "store" / "models") == []


@pytest.mark.parametrize("location,message", [
    ("s3://bucket/x", "use a local path or gs://"),
    ("gs://", "name a bucket"),
])
def test_open_store_refuses_other_locations(location, message):
  """Only local paths and gs://bucket[/prefix] open."""
  with pytest.raises(UserInputError, match=message):
    storage.open_store(location, fake_gcs.FakeClient())


def test_open_store_refuses_a_file(tmp_path):
  """A local store must be a folder."""
  write_file(str(tmp_path / "file"), "")
  with pytest.raises(UserInputError, match="is a file: pass a directory"):
    storage.open_store(str(tmp_path / "file"))


@pytest.mark.parametrize("path", ["gs://bucket/runs/", "/tmp/runs/", ""])
def test_a_run_folder_with_an_empty_name_is_refused(path):
  """An empty last part ($(RUN_ID) expanded to nothing) is refused, naming the JobSet version."""
  with pytest.raises(UserInputError, match=r"--workdir=.*last part, is empty.*JobSet v0\.9\.0"):
    storage.check_run_folder(path, "--workdir")
  storage.check_run_folder(f"{path or '/tmp/'}uid-1", "--workdir")
