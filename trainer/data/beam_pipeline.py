"""The Apache Beam pipeline of `prepare`: reviews -> vocabulary -> sharded TFRecords + metadata.

Two passes over the source, both streamed in batches of reviews:

1. tokenize the train split and count its tokens (a combine) -> the vocabulary;
2. tokenize every split again, map tokens to ids, write each review to the shard that a seeded
   hash of its name picks (each bundle writes its own temporary piece of a shard), gather the
   statistics (a combine); then each shard's pieces are joined into the shard, its reviews
   ordered by the same seeded hash, and metadata.json is written last.

Memory holds the token counts, one batch of reviews and, while it is joined, one shard: it does
not grow with the corpus on the DirectRunner. On a distributed runner (Dataflow) the batches are
reshuffled after reading, so that tokenizing and writing spread over the workers.
"""

import collections
import concurrent.futures
import dataclasses
import hashlib

import apache_beam as beam
from apache_beam.options.pipeline_options import PipelineOptions
from apache_beam.options.pipeline_options import StandardOptions
from apache_beam.transforms import window
import tensorflow as tf

from trainer.data import prepared_dataset
from trainer.data import records
from trainer.data import statistics
from trainer.data import text
from trainer import storage

_BATCH = 1024  # Reviews tokenized per op.
_NORMALIZERS = 2  # Threads running the tokenizer's string ops.
_READ_AHEAD = 3  # Batches being normalized while the one before is used.
_COLUMNS = ("text", "name", "label", "rating", "movie", "split")
_LOCAL_RUNNERS = ("DirectRunner", "BundleBasedDirectRunner", "SwitchingDirectRunner")


@dataclasses.dataclass(frozen=True)
class Plan:
  """What the pipeline needs to know of the whole corpus before it starts."""
  output_dir: str
  validation_groups: frozenset  # Movies (or "review:<name>") moved to validation.
  shard_counts: dict  # Split -> number of shards.
  vocab_size: int
  split_seed: int
  metadata: dict  # metadata.json without the vocabulary size and the splits.


def review_group(review):
  """The group a review moves to validation with: its movie, or the review alone."""
  return review.movie or f"review:{review.name}"


def split_of(review, validation_groups):
  """The prepared split of a review: "test", or "train"/"validation" by its group."""
  if review.split == "test":
    return "test"
  return "validation" if review_group(review) in validation_groups else "train"


def order_key(split_seed, split, name):
  """The seeded hash that picks a review's shard and its place in the shard (bytes)."""
  return hashlib.sha256(f"{split_seed}:{split}:{name}".encode()).digest()


def run(reviews, plan, pipeline_options=None):
  """Runs the pipeline that writes the prepared dataset of `reviews` to `plan.output_dir`.

  Args:
    reviews: re-iterable Reviews (`sources.Corpus.reviews`); picklable for a remote runner.
    plan: the `Plan`.
    pipeline_options: Beam `PipelineOptions`; None for the DirectRunner.
  """
  pipeline_options = pipeline_options or PipelineOptions([], runner="DirectRunner")
  runner = pipeline_options.view_as(StandardOptions).runner or "DirectRunner"
  distributed = runner not in _LOCAL_RUNNERS

  def read(name, splits):
    """Batches of the reviews of `splits`, read from the source once more."""
    batches = (pipeline | f"{name}Source" >> beam.Create([reviews])
               | f"{name}Read" >> beam.FlatMap(_read_batches, plan.validation_groups, splits))
    if distributed:
      batches |= f"{name}Spread" >> beam.Reshuffle()
    return batches

  with beam.Pipeline(options=pipeline_options) as pipeline:
    vocabulary = (read("Vocabulary", ("train",))
                  | "CountTokens" >> beam.Map(_token_counts)
                  | "SumCounts" >> beam.CombineGlobally(_SumTokenCounts())
                  | "PickVocabulary" >> beam.Map(_vocabulary, plan.vocab_size))
    encoded = (read("Encode", prepared_dataset.SPLITS)
               | "EncodeAndWrite" >> beam.ParDo(_EncodeAndWrite(plan),
                                                beam.pvalue.AsSingleton(vocabulary))
               .with_outputs(_EncodeAndWrite.STATISTICS, main="pieces"))
    statistics_ = (encoded[_EncodeAndWrite.STATISTICS]
                   | "Statistics" >> beam.CombinePerKey(_MergeStatistics()))
    shards = (encoded.pieces
              | "PiecesOfShard" >> beam.GroupByKey()
              | "JoinPieces" >> beam.Map(_join_pieces, plan))
    _ = (pipeline | "Once" >> beam.Create([None])
         | "WriteMetadata" >> beam.Map(_write_metadata, plan,
                                       beam.pvalue.AsSingleton(vocabulary),
                                       beam.pvalue.AsDict(statistics_),
                                       beam.pvalue.AsList(shards)))


# --- Reading and tokenizing.


def _read_batches(reviews, validation_groups, splits):
  """Yields the reviews of `splits` in batches of `_BATCH`, normalized ahead by threads.

  A batch is a dict of columns ("text": the review through `text.normalize`, "valid_utf8",
  "name", "label", "rating", "movie", "split"), lists of plain values that Beam encodes quickly
  (a PCollection of tensors would be pickled: Beam samples element sizes by encoding them).
  The tokenizer's string ops run on `_NORMALIZERS` threads while this one reads on.
  """
  pending = collections.deque()
  with concurrent.futures.ThreadPoolExecutor(_NORMALIZERS) as pool:
    batch = _empty_batch()
    for review in reviews:
      split = split_of(review, validation_groups)
      if split not in splits:
        continue
      for column, value in zip(_COLUMNS, (review.text, review.name, review.label,
                                          review.rating, review.movie, split)):
        batch[column].append(value)
      if len(batch["text"]) == _BATCH:
        pending.append(pool.submit(_normalized, batch))
        batch = _empty_batch()
        if len(pending) > _READ_AHEAD:
          yield pending.popleft().result()
    if batch["text"]:
      pending.append(pool.submit(_normalized, batch))
    while pending:
      yield pending.popleft().result()


def _empty_batch():
  """A batch of no reviews."""
  return {column: [] for column in _COLUMNS}


def _normalized(batch):
  """The batch with its raw texts replaced by `text.normalize`'s, and whether each was UTF-8."""
  texts = batch["text"]
  return {**batch, "valid_utf8": [statistics.is_valid_utf8(t) for t in texts],
          "text": text.normalize(tf.constant(texts, tf.string)).numpy().tolist()}


def _tokenize(batch):
  """RaggedTensor string[batch, (tokens)] of a batch of normalized reviews."""
  return tf.strings.split(tf.constant(batch["text"], tf.string))


# --- The vocabulary.


def _token_counts(batch):
  """Dict token (bytes) -> count over the reviews of a batch."""
  unique, _, counts = tf.unique_with_counts(_tokenize(batch).flat_values)
  return dict(zip(unique.numpy().tolist(), counts.numpy().tolist()))


class _SumTokenCounts(beam.CombineFn):
  """Adds up dicts of token counts."""

  def create_accumulator(self):
    """No tokens yet."""
    return {}

  def add_input(self, mutable_accumulator, element):
    """Adds one dict of counts."""
    for token, count in element.items():
      mutable_accumulator[token] = mutable_accumulator.get(token, 0) + count
    return mutable_accumulator

  def merge_accumulators(self, accumulators):
    """Adds the dicts of several workers."""
    accumulators = iter(accumulators)
    total = next(accumulators)
    for accumulator in accumulators:
      self.add_input(total, accumulator)
    return total

  def extract_output(self, accumulator):
    """The summed counts."""
    return accumulator


def _vocabulary(token_counts, vocab_size):
  """The vocabulary of `text.build_vocabulary` from the train split's token counts."""
  return text.build_vocabulary({token.decode("utf-8"): count
                                for token, count in token_counts.items()}, vocab_size)


# --- Encoding and writing the shards.


class _EncodeAndWrite(beam.DoFn):
  """Encodes batches into one temporary piece per shard and bundle; yields the pieces' names.

  Outputs ((split, shard), piece path) at the end of each bundle, and (split, SplitStatistics)
  per batch under the STATISTICS tag.
  """
  STATISTICS = "statistics"

  def __init__(self, plan):
    """Encodes for `plan`; the lookup table is built at the first batch."""
    super().__init__()
    self._plan = plan
    self._table = None
    self._pieces = {}

  def start_bundle(self):
    """No pieces open yet."""
    self._pieces = {}

  def process(self, batch, vocabulary):  # pylint: disable=arguments-differ
    """Encodes one batch and appends its reviews to their shards' pieces."""
    if self._table is None:
      self._table = text.build_lookup_table(vocabulary)
    ids = text.lookup_tokens(_tokenize(batch), self._table)
    flat_ids, splits = ids.flat_values.numpy(), ids.row_splits.numpy()
    is_oov = flat_ids == text.OOV_ID
    counted = {}
    for i, (name, label, split) in enumerate(zip(batch["name"], batch["label"], batch["split"])):
      start, end = splits[i], splits[i + 1]
      counted.setdefault(split, statistics.SplitStatistics()).add(
          name, label, batch["movie"][i], batch["valid_utf8"][i], int(end - start),
          int(is_oov[start:end].sum()))
      if end > start:
        key = order_key(self._plan.split_seed, split, name)
        shard = int.from_bytes(key[:8], "big") % self._plan.shard_counts[split]
        self._piece(split, shard).write(records.serialize(
            flat_ids[start:end], label, batch["rating"][i], name))
    for split, stats in counted.items():
      yield beam.pvalue.TaggedOutput(self.STATISTICS, (split, stats))

  def _piece(self, split, shard):
    """The bundle's open piece of a shard."""
    if (split, shard) not in self._pieces:
      path = storage.temporary_name(_shard_path(self._plan, split, shard))
      self._pieces[(split, shard)] = (path, tf.io.TFRecordWriter(path))
    return self._pieces[(split, shard)][1]

  def finish_bundle(self):
    """Closes the pieces and names them."""
    for key, (path, writer) in self._pieces.items():
      writer.close()
      yield window.GlobalWindows.windowed_value((key, path))


class _MergeStatistics(beam.CombineFn):
  """Merges `SplitStatistics` parts into a split's metadata entry."""

  def create_accumulator(self):
    """No reviews yet."""
    return statistics.SplitStatistics()

  def add_input(self, mutable_accumulator, element):
    """Adds one part."""
    return mutable_accumulator.merge(element)

  def merge_accumulators(self, accumulators):
    """Merges the parts of several workers."""
    accumulators = iter(accumulators)
    total = next(accumulators)
    for accumulator in accumulators:
      total.merge(accumulator)
    return total

  def extract_output(self, accumulator):
    """The metadata entry, without shards."""
    return accumulator.to_metadata()


def _shard_path(plan, split, shard):
  """The final path of a shard."""
  return storage.join(plan.output_dir, prepared_dataset.shard_file_name(
      split, shard, plan.shard_counts[split]))


def _join_pieces(shard_and_pieces, plan):
  """Writes a shard from its pieces, in seeded-hash order; returns (split, shard entry)."""
  (split, shard), pieces = shard_and_pieces
  pieces = sorted(pieces)
  examples = tf.concat([tf.zeros([0], tf.string)] + list(
      tf.data.TFRecordDataset(pieces).batch(_BATCH * 16)), axis=0)
  names = records.parse_names(examples).numpy()
  examples = examples.numpy()
  keys = [order_key(plan.split_seed, split, name.decode("utf-8")) for name in names]
  path = _shard_path(plan, split, shard)
  with (storage.atomic_path(path) as temporary_path,
        tf.io.TFRecordWriter(temporary_path) as writer):
    for _, example in sorted(zip(keys, examples)):
      writer.write(example)
  for piece in pieces:
    tf.io.gfile.remove(piece)
  return split, {"index": shard, "file": prepared_dataset.shard_file_name(
      split, shard, plan.shard_counts[split]), "examples": len(examples)}


def _write_metadata(_, plan, vocabulary, split_statistics, shards):
  """Writes vocab.txt, an empty file for each shard without reviews, and metadata.json last."""
  text.save_vocabulary(vocabulary, storage.join(plan.output_dir, prepared_dataset.VOCABULARY_FILE))
  written = {(split, entry["index"]): entry for split, entry in shards}
  splits = {}
  for split, count in plan.shard_counts.items():
    entries = []
    for shard in range(count):
      if (split, shard) not in written:
        with storage.atomic_path(_shard_path(plan, split, shard)) as temporary_path:
          tf.io.TFRecordWriter(temporary_path).close()
      entry = written.get((split, shard), {"file": prepared_dataset.shard_file_name(
          split, shard, count), "examples": 0})
      entries.append({"file": entry["file"], "examples": entry["examples"]})
    splits[split] = {**split_statistics.get(split, statistics.SplitStatistics().to_metadata()),
                     "shards": entries}
  for name in tf.io.gfile.listdir(plan.output_dir):  # Pieces of retried bundles, never joined.
    if storage.TEMP_MARKER in name and prepared_dataset.is_dataset_file(name):
      tf.io.gfile.remove(storage.join(plan.output_dir, name))
  metadata = {**plan.metadata, "vocab_size": len(vocabulary), "splits": splits}
  storage.write_json_atomically(storage.join(plan.output_dir, prepared_dataset.METADATA_FILE),
                                metadata)
