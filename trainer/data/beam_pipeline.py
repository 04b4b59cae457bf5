"""The Apache Beam pipeline of `prepare`: reviews -> vocabulary -> sharded TFRecords + metadata.

The source is read once, streamed in batches of reviews:

1. each batch is normalized by the tokenizer's string ops (`text.normalize`) and staged: written
   to a temporary file in the output folder (each bundle its own), while the tokens of the
   train split are counted (a combine) -> the vocabulary;
2. once the vocabulary is known, the staged batches are read back, split into tokens, mapped to
   ids and each review is written to the shard that a seeded hash of its name picks (each bundle
   writes its own temporary piece of a shard), gathering the statistics (a combine); then each
   shard's pieces are joined into the shard, its reviews ordered by the same seeded hash, and
   metadata.json is written last, after which the staged files are removed.

Memory holds the token counts, a few batches of reviews and, while it is joined, one shard: it
does not grow with the corpus on the DirectRunner (which would hold a PCollection consumed after
a side input in memory: staging to files is what keeps it bounded). On a distributed runner
(Dataflow) the batches and the staged files are reshuffled, so that the work spreads over the
workers.
"""

import collections
import concurrent.futures
import dataclasses
import hashlib
import pickle

import apache_beam as beam
from apache_beam.options.pipeline_options import PipelineOptions
from apache_beam.options.pipeline_options import StandardOptions
from apache_beam.transforms import window
import tensorflow as tf

from trainer.data import prepared_dataset
from trainer.data import records
from trainer.data import statistics
from trainer.data import survey
from trainer.data import text
from trainer import storage

_BATCH = 1024  # Reviews tokenized per op.
_NORMALIZERS = 2  # Threads running the tokenizer's string ops.
_READ_AHEAD = 3  # Batches being worked on by threads while the one before is used.
_COLUMNS = ("text", "name", "label", "rating", "movie", "split")
_LOCAL_RUNNERS = ("DirectRunner", "BundleBasedDirectRunner", "SwitchingDirectRunner",
                  "FnApiRunner", "PrismRunner")


@dataclasses.dataclass(frozen=True)
class Plan:
  """What the pipeline needs to know of the whole corpus before it starts."""
  output_dir: str
  validation_groups: frozenset  # Movies (or "review:<name>") moved to validation.
  shard_counts: dict  # Split -> number of shards.
  vocab_size: int
  split_seed: int
  metadata: dict  # metadata.json without the vocabulary size and the splits.


def split_of(review, validation_groups):
  """The prepared split of a review: "test", or "train"/"validation" by its group."""
  if review.split == "test":
    return "test"
  return ("validation" if survey.review_group(review.name, review.movie) in validation_groups
          else "train")


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
  standard_options = pipeline_options.view_as(StandardOptions)
  if standard_options.runner in (None, "DirectRunner"):
    # The engine of Beam's DirectRunner, in this process. The DirectRunner itself would first
    # try to download its Prism runner (a Go binary) from GitHub and, where it can, run there.
    standard_options.runner = "FnApiRunner"
  distributed = standard_options.runner not in _LOCAL_RUNNERS

  with beam.Pipeline(options=pipeline_options) as pipeline:
    batches = (pipeline | "Source" >> beam.Create([reviews])
               | "ReadAndNormalize" >> beam.FlatMap(_read_batches, plan.validation_groups))
    if distributed:
      batches |= "SpreadBatches" >> beam.Reshuffle()
    staged = (batches
              | "StageAndCount" >> beam.ParDo(_StageAndCount(plan.output_dir))
              .with_outputs(_StageAndCount.TOKEN_COUNTS, main="files"))
    vocabulary = (staged[_StageAndCount.TOKEN_COUNTS]
                  | "SumCounts" >> beam.CombineGlobally(_SumTokenCounts())
                  | "PickVocabulary" >> beam.Map(_vocabulary, plan.vocab_size))
    staged_files = staged.files  # Paths, not batches: what waits for the vocabulary is small.
    if distributed:
      staged_files |= "SpreadStagedFiles" >> beam.Reshuffle()
    encoded = (staged_files
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


# --- Reading, normalizing and staging.


def _read_batches(reviews, validation_groups):
  """Yields the reviews in batches of `_BATCH`, normalized and counted ahead by threads.

  Yields (batch, token counts of its train reviews). A batch is a dict of columns ("text": the
  review through `text.normalize`, "valid_utf8", "name", "label", "rating", "movie", "split"),
  lists of plain values that Beam encodes quickly (a PCollection of tensors would be pickled:
  Beam samples element sizes by encoding them). The tokenizer's string ops run on
  `_NORMALIZERS` threads while this one reads on.
  """
  return _computed_ahead(_normalized_and_counted, _batches(reviews, validation_groups),
                         _NORMALIZERS)


def _computed_ahead(function, items, threads):
  """Yields `function(item)` of each item in order, computed by threads `_READ_AHEAD` ahead."""
  pending = collections.deque()
  with concurrent.futures.ThreadPoolExecutor(threads) as pool:
    for item in items:
      pending.append(pool.submit(function, item))
      if len(pending) > _READ_AHEAD:
        yield pending.popleft().result()
    while pending:
      yield pending.popleft().result()


def _batches(reviews, validation_groups):
  """Yields the reviews in batches of `_BATCH` with raw texts (see `_read_batches`)."""
  batch = _empty_batch()
  for review in reviews:
    for column, value in zip(_COLUMNS, (review.text, review.name, review.label, review.rating,
                                        review.movie, split_of(review, validation_groups))):
      batch[column].append(value)
    if len(batch["text"]) == _BATCH:
      yield batch
      batch = _empty_batch()
  if batch["text"]:
    yield batch


def _empty_batch():
  """A batch of no reviews."""
  return {column: [] for column in _COLUMNS}


def _normalized_and_counted(batch):
  """(The batch with its texts through `text.normalize` and "valid_utf8", its train token counts).
  """
  texts = batch["text"]
  normalized = text.normalize(tf.constant(texts, tf.string)).numpy().tolist()
  train = [review for review, split in zip(normalized, batch["split"]) if split == "train"]
  return ({**batch, "valid_utf8": [statistics.is_valid_utf8(t) for t in texts],
           "text": normalized}, _token_counts(train) if train else {})


class _StageAndCount(beam.DoFn):
  """Writes normalized batches to a staged file per bundle.

  Outputs the staged file's path at the end of each bundle, and passes each batch's token
  counts (a dict) on under the TOKEN_COUNTS tag.
  """
  TOKEN_COUNTS = "token_counts"

  def __init__(self, output_dir):
    """Stages into temporary files of `output_dir`."""
    super().__init__()
    self._output_dir = output_dir
    self._staged = None

  def start_bundle(self):
    """No staged file open yet."""
    self._staged = None

  def process(self, batch_and_counts):  # pylint: disable=arguments-differ
    """Stages one batch; outputs the token counts of its train reviews."""
    batch, token_counts = batch_and_counts
    if self._staged is None:
      path = storage.temporary_name(storage.join(self._output_dir, prepared_dataset.STAGED_FILE))
      self._staged = (path, tf.io.gfile.GFile(path, "wb"))
    _append_pickled(self._staged[1], batch)
    if token_counts:
      yield beam.pvalue.TaggedOutput(self.TOKEN_COUNTS, token_counts)

  def finish_bundle(self):
    """Closes the staged file and names it."""
    if self._staged is not None:
      path, writer = self._staged
      writer.close()
      yield window.GlobalWindows.windowed_value(path)


def _tokenize(normalized):
  """RaggedTensor string[batch, (tokens)] of a list of normalized reviews."""
  return tf.strings.split(tf.constant(normalized, tf.string))


# --- The vocabulary.


def _token_counts(normalized):
  """Dict token (bytes) -> count over a list of normalized reviews."""
  unique, _, counts = tf.unique_with_counts(_tokenize(normalized).flat_values)
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
  """Encodes staged files into temporary pieces of the shards; yields the pieces' names.

  A piece (one per shard and bundle) holds (seeded-hash key, serialized review) pairs.

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

  def process(self, staged_path, vocabulary):  # pylint: disable=arguments-differ
    """Encodes the batches of a staged file; a thread looks their ids up ahead."""
    if self._table is None:
      self._table = text.build_lookup_table(vocabulary)
    for batch, flat_ids, splits, oov in _computed_ahead(self._ids, _read_pickled(staged_path), 1):
      counted = {}
      for i, (name, label, split) in enumerate(zip(batch["name"], batch["label"],
                                                   batch["split"])):
        start, end = splits[i], splits[i + 1]
        counted.setdefault(split, statistics.SplitStatistics()).add(
            name, label, batch["movie"][i], batch["valid_utf8"][i], end - start, oov[i])
        if end > start:
          key = order_key(self._plan.split_seed, split, name)
          shard = int.from_bytes(key[:8], "big") % self._plan.shard_counts[split]
          _append_pickled(self._piece(split, shard), (key, records.serialize(
              flat_ids[start:end], label, batch["rating"][i], name)))
      for split, stats in counted.items():
        yield beam.pvalue.TaggedOutput(self.STATISTICS, (split, stats))

  def _ids(self, batch):
    """(batch, its reviews' ids one after another, their row splits, out-of-vocabulary counts)."""
    ids = text.lookup_tokens(_tokenize(batch["text"]), self._table)
    oov = tf.reduce_sum(tf.cast(tf.math.equal(ids, text.OOV_ID), tf.int64), axis=1)
    return (batch, ids.flat_values.numpy().tolist(), ids.row_splits.numpy().tolist(),
            oov.numpy().tolist())

  def _piece(self, split, shard):
    """The bundle's open piece of a shard."""
    if (split, shard) not in self._pieces:
      path = storage.temporary_name(_shard_path(self._plan, split, shard))
      self._pieces[(split, shard)] = (path, tf.io.gfile.GFile(path, "wb"))
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


def _append_pickled(file, value):
  """Appends `value` to a temporary file of pickled values (staged batches, pieces of shards)."""
  pickle.dump(value, file, protocol=pickle.HIGHEST_PROTOCOL)


def _read_pickled(path):
  """Yields the values of a temporary file that `_append_pickled` wrote, in order."""
  with tf.io.gfile.GFile(path, "rb") as file:
    while True:
      try:
        yield pickle.load(file)
      except EOFError:
        return


def _shard_path(plan, split, shard):
  """The final path of a shard."""
  return storage.join(plan.output_dir, prepared_dataset.shard_file_name(
      split, shard, plan.shard_counts[split]))


def _join_pieces(shard_and_pieces, plan):
  """Writes a shard from its pieces, in seeded-hash order; returns (split, shard entry)."""
  (split, shard), pieces = shard_and_pieces
  pieces = sorted(pieces)
  keyed_examples = sorted(keyed for piece in pieces for keyed in _read_pickled(piece))
  path = _shard_path(plan, split, shard)
  with (storage.atomic_path(path) as temporary_path,
        tf.io.TFRecordWriter(temporary_path) as writer):
    for _, example in keyed_examples:
      writer.write(example)
  for piece in pieces:
    tf.io.gfile.remove(piece)
  return split, {"index": shard, "file": prepared_dataset.shard_file_name(
      split, shard, plan.shard_counts[split]), "examples": len(keyed_examples)}


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
  for name in tf.io.gfile.listdir(plan.output_dir):  # Staged files; pieces of retried bundles.
    if storage.TEMP_MARKER in name and prepared_dataset.is_dataset_file(name):
      tf.io.gfile.remove(storage.join(plan.output_dir, name))
  metadata = {**plan.metadata, "vocab_size": len(vocabulary), "splits": splits}
  storage.write_json_atomically(storage.join(plan.output_dir, prepared_dataset.METADATA_FILE),
                                metadata)
