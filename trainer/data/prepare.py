"""Turns an IMDB corpus into a vocabulary and sharded TFRecords: `python -m trainer.prepare`.

The output (a local path or gs:// URI) holds `{train,validation,test}-NNNNN-of-NNNNN.tfrecord`,
`vocab.txt` and `metadata.json`. Validation reviews are carved from the official training split,
whole movies at a time; test is the official test split. The vocabulary comes from the train
split only.

A survey of the source (`survey`: made by the tarball's reader while it reads, else a pass here)
checksums the reviews and counts them per movie, which picks the validation movies; the Apache
Beam pipeline of `beam_pipeline` then does the work, on the DirectRunner or on many machines
(DataflowRunner).

The output is complete exactly when metadata.json exists: it is written last. Preparing again
with the same source and options does nothing; a different existing dataset is kept unless
`overwrite`; files this module did not write are never deleted.
"""

import dataclasses
import hashlib
import json

from absl import logging
import tensorflow as tf

from trainer import config as config_lib
from trainer.config import DataConfig
from trainer.data import beam_pipeline
from trainer.data import prepared_dataset
from trainer.data import survey
from trainer.data import text
from trainer.errors import UserInputError
from trainer import storage

_FINGERPRINT_CHARACTERS = 16  # Of a dataset's fingerprint, naming its folder in a cache.


def validation_groups(group_sizes, fraction, seed):
  """Picks the groups (movies) moved from the official train split to validation.

  Groups are taken in an order fixed by a hash of (seed, group) until `fraction` of the training
  reviews is reached, so a review's side depends on nothing but its movie and the seed.

  Returns:
    frozenset of group names.
  """
  ranked = sorted(group_sizes,
                  key=lambda group: hashlib.sha256(f"{seed}:{group}".encode()).digest())
  total, chosen, size = sum(group_sizes.values()), set(), 0
  for group in ranked:
    if size >= fraction * total:
      break
    chosen.add(group)
    size += group_sizes[group]
  return frozenset(chosen)


def _validation_grouping(validation, group_sizes):
  """Describes how the validation split was grouped, for metadata.json."""
  without_movie = sum(group.startswith("review:") for group in validation)
  if not without_movie:
    return "movie"
  if without_movie == sum(group_sizes[group] for group in validation):
    return "review (the source names no movies)"
  return f"movie ({without_movie} reviews without a known movie: by review)"


def fingerprint(content_checksum, config):
  """Identifies a prepared dataset: same source content, `DataConfig` and format -> same output."""
  identity = {"content_sha256": content_checksum, "options": dataclasses.asdict(config),
              "tokenizer_version": text.TOKENIZER_VERSION,
              "format_version": prepared_dataset.FORMAT_VERSION}
  return hashlib.sha256(json.dumps(identity, sort_keys=True).encode()).hexdigest()


# --- Output directory.


def _clear_output_dir(output_dir, fingerprint_, overwrite):
  """Makes `output_dir` ready for a new dataset.

  Returns:
    The existing metadata when the same dataset is already there (and not `overwrite`), else
    None after removing what an earlier or interrupted run of prepare left.
  """
  if not tf.io.gfile.exists(output_dir):
    tf.io.gfile.makedirs(output_dir)
    return None
  names = tf.io.gfile.listdir(output_dir)
  foreign = sorted(n for n in names if not prepared_dataset.is_dataset_file(n))
  if foreign:
    raise UserInputError(
        f"--output_dir={output_dir} holds files that prepare did not write "
        f"({', '.join(foreign[:5])}{', ...' if len(foreign) > 5 else ''}). Choose an empty or "
        "new folder.")
  metadata_path = storage.join(output_dir, prepared_dataset.METADATA_FILE)
  if prepared_dataset.METADATA_FILE in names:
    existing = storage.read_json(metadata_path)
    if existing.get("fingerprint") == fingerprint_ and not overwrite:
      return existing
    if not overwrite:
      raise UserInputError(
          f"--output_dir={output_dir} already holds a different prepared dataset (from "
          f"{existing.get('source', {}).get('path', existing.get('source'))}, options "
          f"{existing.get('options')}). Pass --overwrite to replace it, or choose another folder.")
    tf.io.gfile.remove(metadata_path)  # First, so the old dataset stops looking complete.
  for name in names:
    if name != prepared_dataset.METADATA_FILE:
      tf.io.gfile.remove(storage.join(output_dir, name))
  return None


def _shard_counts(split_sizes, num_shards):
  """Shards per split: `num_shards`, or fewer for a split of fewer reviews."""
  counts = {}
  for split, size in split_sizes.items():
    counts[split] = max(1, min(num_shards, size))
    if counts[split] < num_shards:
      logging.warning("The %s split has %d reviews: writing %d shards instead of %d.",
                      split, size, counts[split], num_shards)
  return counts


def prepare(corpus, output_dir, options=DataConfig(), overwrite=False, pipeline_options=None):
  """Writes the prepared dataset of `corpus` to `output_dir`.

  Args:
    corpus: a `sources.Corpus`.
    output_dir: local path or URI (gs://...) of the dataset folder.
    options: a `config.DataConfig`.
    overwrite: replace a different prepared dataset found in `output_dir`.
    pipeline_options: Beam `PipelineOptions` (the runner and its options); None: DirectRunner.

  Returns:
    The dataset's metadata (also written to `output_dir`/metadata.json).
  """
  facts = survey.survey_corpus(corpus)
  fingerprint_ = fingerprint(facts.content_sha256, options)
  existing = _clear_output_dir(output_dir, fingerprint_, overwrite)
  if existing:
    logging.info("%s already holds this dataset (fingerprint %s): nothing to do.",
                 output_dir, fingerprint_)
    return existing
  validation = validation_groups(facts.train_group_sizes, options.validation_fraction,
                                 options.split_seed)
  validation_size = sum(facts.train_group_sizes[group] for group in validation)
  split_sizes = {"train": sum(facts.train_group_sizes.values()) - validation_size,
                 "validation": validation_size, "test": facts.test_reviews}
  _check_not_empty(split_sizes, corpus)
  plan = beam_pipeline.Plan(
      output_dir=output_dir, validation_groups=validation,
      shard_counts=_shard_counts(split_sizes, options.num_shards),
      vocab_size=options.vocab_size, split_seed=options.split_seed, metadata={
          "format_version": prepared_dataset.FORMAT_VERSION,
          "fingerprint": fingerprint_,
          "source": {**corpus.source, "content_sha256": facts.content_sha256},
          "options": dataclasses.asdict(options),
          "tokenizer_version": text.TOKENIZER_VERSION,
          "vocab_file": prepared_dataset.VOCABULARY_FILE,
          "pad_id": text.PAD_ID,
          "oov_id": text.OOV_ID,
          "validation_grouped_by": _validation_grouping(validation, facts.train_group_sizes),
          "empty_reviews": "dropped",
      })
  beam_pipeline.run(corpus.reviews, plan, pipeline_options)
  metadata = prepared_dataset.load_metadata(output_dir)
  _check_not_empty({split: stats["examples"] for split, stats in metadata["splits"].items()},
                   corpus)
  logging.info("Prepared %s: %s", output_dir,
               {split: stats["examples"] for split, stats in metadata["splits"].items()})
  return metadata


def _check_not_empty(split_sizes, corpus):
  """Raises UserInputError naming the first split without reviews (with words)."""
  for split, size in split_sizes.items():
    if not size:
      raise UserInputError(f"The {split} split of {corpus.source.get('path')} has no reviews "
                           "with words; check the source.")


def prepare_for_run(config, read_corpus, workdir, num_workers):
  """`config` with a data_dir: the source prepared into <workdir>/data when none is given.

  Args:
    config: a `config.Config`; its data section says how to prepare.
    read_corpus: returns the `sources.Corpus` to prepare (called only when preparing).
    workdir: the run's folder.
    num_workers: processes that will train (only a single one may prepare on its own).
  """
  if config.run.data_dir or config.run.synthetic_data:
    return config
  if num_workers > 1:
    raise UserInputError("A multi-worker job needs --data_dir: prepare the data once "
                         "(python -m trainer.prepare --output_dir=gs://...) and pass it.")
  storage.check_writable(workdir, "--workdir")
  data_dir = storage.join(workdir, "data")
  _prepare_unless_present(read_corpus, data_dir, config.data)
  return config_lib.override(config, data_dir=data_dir)


def _prepare_unless_present(read_corpus, output_dir, options):
  """Prepares `read_corpus()` into `output_dir` unless it holds a dataset of these options.

  The source is not read when the dataset is there: a rerun of a job starts at once.

  Returns:
    The dataset's metadata.
  """
  if tf.io.gfile.exists(storage.join(output_dir, prepared_dataset.METADATA_FILE)):
    metadata = prepared_dataset.load_metadata(output_dir)
    if metadata.get("options") != dataclasses.asdict(options):
      raise UserInputError(
          f"{output_dir} holds a dataset prepared with {metadata.get('options')}, not "
          f"{dataclasses.asdict(options)}. Use the same data flags, or a new --workdir.")
    logging.info("Using the dataset prepared before in %s.", output_dir)
    return metadata
  return prepare(read_corpus(), output_dir, options)


def cache_folder(corpus, data_cache, options):
  """The folder of `<data_cache>` that holds (or will hold) `corpus` prepared with `options`."""
  folder = fingerprint(survey.survey_corpus(corpus).content_sha256,
                       options)[:_FINGERPRINT_CHARACTERS]
  return storage.join(data_cache, folder)


def prepare_into_cache(corpus, data_cache, options):
  """Prepares `corpus` into `<data_cache>/<fingerprint>` unless it is there already.

  Returns:
    (the dataset folder, whether it was prepared now).
  """
  data_dir = cache_folder(corpus, data_cache, options)
  if tf.io.gfile.exists(storage.join(data_dir, prepared_dataset.METADATA_FILE)):
    logging.info("The source is unchanged: using the dataset prepared in %s.", data_dir)
    return data_dir, False
  prepare(corpus, data_dir, options)
  return data_dir, True
