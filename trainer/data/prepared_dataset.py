"""The layout of a prepared dataset: file names, metadata.json, and finding a split's shards.

A prepared dataset is complete exactly when its metadata.json exists: `prepare` writes it last.
"""

import re

import tensorflow as tf

from trainer import errors
from trainer.errors import UserInputError
from trainer import storage

FORMAT_VERSION = 1
METADATA_FILE = "metadata.json"
VOCABULARY_FILE = "vocab.txt"
STAGED_FILE = "staged-reviews.tfrecord"  # Temporary names of it hold prepare's normalized reviews.
SPLITS = ("train", "validation", "test")
_SHARD_FILE = re.compile(r"^(train|validation|test)-\d{5}-of-\d{5}\.tfrecord$")


def shard_file_name(split, index, count):
  """Returns the name of shard `index` of `count` of a split."""
  return f"{split}-{index:05d}-of-{count:05d}.tfrecord"


def is_dataset_file(name):
  """Whether a file name is one that `prepare` writes (or a leftover temporary of one)."""
  name = storage.final_name(name)
  return name in (METADATA_FILE, VOCABULARY_FILE, STAGED_FILE) or bool(_SHARD_FILE.match(name))


def _how_to_prepare(data_dir):
  """The command that makes a prepared dataset in `data_dir`."""
  return (f"python -m trainer.prepare --input=/path/to/aclImdb_v1.tar.gz "
          f"--output_dir={data_dir}")


def load_metadata(data_dir):
  """Reads a prepared dataset's metadata.json, with a clear error when there is none."""
  path = storage.join(data_dir, METADATA_FILE)
  if not tf.io.gfile.exists(path):
    raise UserInputError(f"{data_dir} is not a prepared dataset (no {METADATA_FILE}, so no "
                         f"complete TFRecords). Make one with: {_how_to_prepare(data_dir)}")
  metadata = storage.read_json(path)
  if metadata.get("format_version") != FORMAT_VERSION:
    raise UserInputError(f"{path} has format version {metadata.get('format_version')}, this "
                         f"trainer reads version {FORMAT_VERSION}. Prepare it again with: "
                         f"{_how_to_prepare(data_dir)} --overwrite")
  return metadata


def split_files(data_dir, split, metadata=None):
  """Returns the full paths of a split's shards, in order.

  Args:
    data_dir: a prepared dataset.
    split: "train", "validation" or "test".
    metadata: its metadata, read from `data_dir` when not given.

  Returns:
    List of TFRecord paths.
  """
  metadata = metadata or load_metadata(data_dir)
  if split not in metadata["splits"]:
    raise UserInputError(f"{data_dir} has no {split} split; it has {sorted(metadata['splits'])}.")
  return [storage.join(data_dir, shard["file"]) for shard in metadata["splits"][split]["shards"]]


def unreadable_shards(data_dir):
  """The shards of `data_dir` that cannot be read to the end, each with the reason.

  Returns:
    List of "path (error)" strings; empty when every shard reads.
  """
  problems = []
  for split in SPLITS:
    for path in split_files(data_dir, split):
      try:
        for _ in tf.data.TFRecordDataset(path):
          pass
      except tf.errors.OpError as e:
        problems.append(f"{path} ({type(e).__name__}: {errors.first_line(e)})")
  return problems


def corrupt_data_error(data_dir, error):
  """The UserInputError for a read failure in `data_dir`: it names the broken shards."""
  broken = unreadable_shards(data_dir)
  what = "; ".join(broken) if broken else f"a shard ({errors.first_line(error)})"
  return UserInputError(f"The prepared dataset {data_dir} is damaged: {what}. Prepare it again: "
                        f"{_how_to_prepare(data_dir)} --overwrite")
