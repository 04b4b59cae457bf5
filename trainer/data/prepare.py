"""Turns an IMDB corpus into a vocabulary and sharded TFRecords: `python -m trainer.prepare`.

The output (a local path or gs:// URI) holds `{train,validation,test}-NNNNN-of-NNNNN.tfrecord`,
`vocab.txt` and `metadata.json`. Validation reviews are carved from the official training split,
whole movies at a time; test is the official test split. The vocabulary comes from the train
split only.

The output is complete exactly when metadata.json exists: it is written last. Preparing again
with the same source and options does nothing; a different existing dataset is kept unless
`overwrite`; files this module did not write are never deleted.
"""

import collections
import dataclasses
import hashlib
import json

from absl import logging
import numpy as np
import tensorflow as tf

from trainer.config import DataConfig
from trainer.data import prepared_dataset
from trainer.data import records
from trainer.data import sources
from trainer.data import text
from trainer.errors import UserInputError
from trainer import storage

_TOKENIZE_BATCH = 1024
_LISTED_REVIEWS = 100  # At most this many review names per problem in metadata.json.
_FINGERPRINT_CHARACTERS = 16  # Of a dataset's fingerprint, naming its folder in a cache.


# --- Splitting.


def split_validation(reviews, fraction, seed):
  """Moves whole movies from the official train split to validation.

  Movies are taken in an order fixed by a hash of (seed, movie) until `fraction` of the training
  reviews is reached, so a review's side depends on nothing but its movie and the seed. Reviews
  without a known movie are their own group.

  Returns:
    Dict split name -> list of Review, for "train", "validation" and "test".
  """
  train = [r for r in reviews if r.split == "train"]
  groups = collections.defaultdict(list)
  for review in train:
    groups[review.movie or f"review:{review.name}"].append(review)
  ranked = sorted(groups, key=lambda group: hashlib.sha256(f"{seed}:{group}".encode()).digest())
  validation_groups, size = set(), 0
  for group in ranked:
    if size >= fraction * len(train):
      break
    validation_groups.add(group)
    size += len(groups[group])
  return {
      "train": [r for r in train if (r.movie or f"review:{r.name}") not in validation_groups],
      "validation": [r for r in train if (r.movie or f"review:{r.name}") in validation_groups],
      "test": [r for r in reviews if r.split == "test"],
  }


def _validation_grouping(validation):
  """Describes how the validation split was grouped, for metadata.json."""
  without_movie = sum(r.movie is None for r in validation)
  if not without_movie:
    return "movie"
  if without_movie == len(validation):
    return "review (the source names no movies)"
  return f"movie ({without_movie} reviews without a known movie: by review)"


# --- Tokenizing.


def tokenize_all(texts):
  """Tokenizes raw reviews with `text.tokenize`, batched over both cores.

  Returns:
    RaggedTensor string[len(texts), (tokens)].
  """
  if not texts:
    return tf.ragged.constant([], dtype=tf.string, ragged_rank=1)
  batches = (tf.data.Dataset.from_tensor_slices(tf.constant(texts, tf.string))
             .batch(_TOKENIZE_BATCH)
             .map(text.tokenize, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True))
  return tf.concat(list(batches), axis=0)


def count_tokens(tokens):
  """Counts each token of RaggedTensor string[batch, (tokens)]; returns dict str -> int."""
  unique, _, counts = tf.unique_with_counts(tokens.flat_values)
  return {token.decode("utf-8"): int(count)
          for token, count in zip(unique.numpy().tolist(), counts.numpy().tolist())}


# --- Statistics.


def _token_length_stats(lengths):
  """Mean, percentiles and max of token counts per review."""
  if not len(lengths):
    return {}
  percentiles = np.percentile(lengths, [50, 90, 95, 99])
  return {"mean": round(float(np.mean(lengths)), 2), "p50": float(percentiles[0]),
          "p90": float(percentiles[1]), "p95": float(percentiles[2]),
          "p99": float(percentiles[3]), "max": int(np.max(lengths))}


def _listed(names):
  """A count and the first few names, for a problem worth reporting."""
  return {"count": len(names), "reviews": names[:_LISTED_REVIEWS]}


def _is_valid_utf8(data):
  """Whether bytes decode as UTF-8."""
  try:
    data.decode("utf-8")
    return True
  except UnicodeDecodeError:
    return False


def content_sha256(reviews):
  """A checksum of the labelled reviews themselves, whatever their container."""
  digest = hashlib.sha256()
  for review in sorted(reviews, key=lambda r: r.name):
    header = f"{review.name}\t{review.label}\t{review.rating}\t{review.movie}\t{len(review.text)}\n"
    digest.update(header.encode("utf-8"))
    digest.update(review.text)
  return digest.hexdigest()


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


def _write_shards(output_dir, split, examples, num_shards):
  """Writes serialized examples into shards, each under a temporary name then renamed.

  Returns:
    List of {"file": name, "examples": count}.
  """
  count = max(1, min(num_shards, len(examples)))
  if count < num_shards:
    logging.warning("The %s split has %d reviews: writing %d shards instead of %d.",
                    split, len(examples), count, num_shards)
  shards = []
  for index, piece in enumerate(np.array_split(np.arange(len(examples)), count)):
    name = prepared_dataset.shard_file_name(split, index, count)
    with (storage.atomic_path(storage.join(output_dir, name)) as temporary_path,
          tf.io.TFRecordWriter(temporary_path) as writer):
      for i in piece:
        writer.write(examples[i])
    shards.append({"file": name, "examples": len(piece)})
  return shards


# --- The whole preparation.


def _encode_split(reviews, tokens, table, seed):
  """Encodes a split's reviews in a seeded random order, dropping those with no tokens.

  Returns:
    (serialized examples, statistics for metadata.json).
  """
  ids = text.lookup_tokens(tokens, table)
  lengths = ids.row_lengths().numpy()
  flat_ids, splits = ids.flat_values.numpy(), ids.row_splits.numpy()
  empty = [reviews[i].name for i in np.flatnonzero(lengths == 0)]
  for name in empty[:_LISTED_REVIEWS]:
    logging.warning("Dropping %s: it has no words (an empty review).", name)
  order = np.random.default_rng(seed).permutation(len(reviews))
  examples = [records.serialize(flat_ids[splits[i]:splits[i + 1]], reviews[i].label,
                                reviews[i].rating, reviews[i].name)
              for i in order if lengths[i]]
  kept = lengths > 0
  labels = np.array([r.label for r in reviews], dtype=np.int64)[kept] if reviews else np.zeros(0)
  stats = {
      "examples": len(examples),
      "labels": {name: int(np.sum(labels == i)) for i, name in enumerate(sources.LABELS)},
      "movies": len({r.movie for r in reviews if r.movie}) or None,
      "token_length": _token_length_stats(lengths[kept]),
      "oov_rate": round(float(np.mean(flat_ids == text.OOV_ID)), 5) if len(flat_ids) else 0.0,
      "dropped_empty": _listed(empty),
      "invalid_utf8": _listed([r.name for r in reviews if not _is_valid_utf8(r.text)]),
  }
  return examples, stats


def prepare(corpus, output_dir, options=DataConfig(), overwrite=False):
  """Writes the prepared dataset of `corpus` to `output_dir`.

  Args:
    corpus: a `sources.Corpus`.
    output_dir: local path or URI (gs://...) of the dataset folder.
    options: a `config.DataConfig`.
    overwrite: replace a different prepared dataset found in `output_dir`.

  Returns:
    The dataset's metadata (also written to `output_dir`/metadata.json).
  """
  options.check()
  checksum = content_sha256(corpus.reviews)
  fingerprint_ = fingerprint(checksum, options)
  existing = _clear_output_dir(output_dir, fingerprint_, overwrite)
  if existing:
    logging.info("%s already holds this dataset (fingerprint %s): nothing to do.",
                 output_dir, fingerprint_)
    return existing

  splits = split_validation(corpus.reviews, options.validation_fraction, options.split_seed)
  tokens = {split: tokenize_all([r.text for r in reviews]) for split, reviews in splits.items()}
  vocabulary = text.build_vocabulary(count_tokens(tokens["train"]), options.vocab_size)
  table = text.build_lookup_table(vocabulary)

  split_metadata = {}
  for split_index, (split, reviews) in enumerate(splits.items()):
    examples, stats = _encode_split(reviews, tokens[split], table, options.split_seed + split_index)
    if not examples:
      raise UserInputError(f"The {split} split of {corpus.source.get('path')} has no reviews "
                           "with words; check the source.")
    stats["shards"] = _write_shards(output_dir, split, examples, options.num_shards)
    split_metadata[split] = stats
  text.save_vocabulary(vocabulary, storage.join(output_dir, prepared_dataset.VOCABULARY_FILE))
  metadata = {
      "format_version": prepared_dataset.FORMAT_VERSION,
      "fingerprint": fingerprint_,
      "source": {**corpus.source, "content_sha256": checksum},
      "options": dataclasses.asdict(options),
      "tokenizer_version": text.TOKENIZER_VERSION,
      "vocab_size": len(vocabulary),
      "vocab_file": prepared_dataset.VOCABULARY_FILE,
      "pad_id": text.PAD_ID,
      "oov_id": text.OOV_ID,
      "validation_grouped_by": _validation_grouping(splits["validation"]),
      "empty_reviews": "dropped",
      "splits": split_metadata,
  }
  storage.write_json_atomically(storage.join(output_dir, prepared_dataset.METADATA_FILE), metadata)
  logging.info("Prepared %s: %s", output_dir,
               {split: stats["examples"] for split, stats in split_metadata.items()})
  return metadata


def prepare_unless_present(read_corpus, output_dir, options):
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


def prepare_into_cache(corpus, data_cache, options):
  """Prepares `corpus` into `<data_cache>/<fingerprint>` unless it is there already.

  Returns:
    (the dataset folder, whether it was prepared now).
  """
  folder = fingerprint(content_sha256(corpus.reviews), options)[:_FINGERPRINT_CHARACTERS]
  data_dir = storage.join(data_cache, folder)
  if tf.io.gfile.exists(storage.join(data_dir, prepared_dataset.METADATA_FILE)):
    logging.info("The source is unchanged: using the dataset prepared in %s.", data_dir)
    return data_dir, False
  prepare(corpus, data_dir, options)
  return data_dir, True
