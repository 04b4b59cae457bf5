"""File helpers over `tf.io.gfile` (local paths, gs://, ram://): atomic writes and joins."""

import json
import os
import uuid

import tensorflow as tf

TEMP_MARKER = ".tmp-"


def join(directory, *names):
  """Joins path parts for a local directory or a URI such as gs://bucket/dir."""
  if "://" in directory:
    return "/".join([directory.rstrip("/"), *names])
  return os.path.join(directory, *names)


def temporary_name(path):
  """Returns a unique sibling name for `path` that readers never mistake for it."""
  return f"{path}{TEMP_MARKER}{uuid.uuid4().hex}"


def is_temporary(path):
  """Whether `path` is a leftover of `temporary_name` (an interrupted write)."""
  return TEMP_MARKER in os.path.basename(path)


def publish(temporary_path, path):
  """Renames a fully written temporary file to its final name in one step."""
  tf.io.gfile.rename(temporary_path, path, overwrite=True)


def write_text_atomically(path, text):
  """Writes `text` to `path` so that readers see the old file or the whole new one."""
  temporary_path = temporary_name(path)
  with tf.io.gfile.GFile(temporary_path, "w") as f:
    f.write(text)
  publish(temporary_path, path)


def json_text(value):
  """`value` as the JSON text of the project's files: indented, keys sorted, a final newline."""
  return json.dumps(value, indent=2, sort_keys=True) + "\n"


def write_json_atomically(path, value):
  """Writes `value` as indented JSON to `path` atomically."""
  write_text_atomically(path, json_text(value))


def read_json(path):
  """Reads a JSON file through gfile."""
  with tf.io.gfile.GFile(path) as f:
    return json.load(f)
