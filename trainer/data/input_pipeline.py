"""The tf.data input pipeline: prepared TFRecords -> right-padded, length-bucketed batches.

For training, each input pipeline (one per worker) reads all the training reviews once (in
chunks of `read_chunk` reviews, parsed in parallel), keeps them in memory as one ragged tensor,
and from then on works on whole windows and batches only. Every pipeline derives the same global
stream of steps and keeps the rows of its own replicas of each step, so a step's global batch is
the same on one device, on 8 replicas or on 8 workers (the per-example dropout of
`modeling.noise` is keyed by the same global rows): a cluster's shape does not change what is
learned. (For evaluation each pipeline reads its share of the shards: whole files, or every n-th
review when there are fewer files than pipelines.)

- Training reads an endless stream of examples. Stream position p is position p mod N of
  epoch p div N's order of the N reviews: a stateless random permutation per (seed, epoch), so
  every review appears exactly once per epoch and step s always yields the same batch: a run
  resumed at step s continues the exact sequence (`start_step`).
- Bucketing: the stream is cut into windows of `sort_window_batches` batches; each window is
  sorted by length, cut into batches of reviews of similar length, and its batches are shuffled.
  Batches are padded to their own longest review, so padding is nearly gone, and all of this is a
  few vectorized ops per window instead of per-example work: a window's reviews are gathered once
  in the order of its batches (several windows in parallel), and each batch is then a slice of
  consecutive rows padded by one op (`batching`).
- No step (the batches of all replicas) holds a review twice, as no window does. A window that
  two epochs share could hold a review of both, so each epoch's last window-size positions put
  first those of its reviews that the next epoch's share holds: they move to the window before.
  This needs windows of at most (N + 1) / 2 reviews, so fewer batches than `sort_window_batches`
  are sorted together when more would not fit. With step <= N < 2 step - 1 reviews, a window is
  one step and, unless N is one step, all epochs share one permutation, whose N consecutive
  positions all differ. With fewer reviews than a step, repeats are unavoidable: windows keep
  their size and nothing moves, as before.
- A step is `per_replica_batch_size * replicas` reviews of similar length (all replicas of all
  pipelines); replica r gets the r-th consecutive slice, so a pipeline feeding several replicas
  (MirroredStrategy) hands out consecutive slices of its part.
- Evaluation yields every review once, sorted by length, the last batch possibly smaller (the
  reviews are gathered `sort_window_batches` batches at a time); with `endless=True` it then
  yields filler batches (label -1) forever, so that workers with fewer reviews can keep in step
  with the others until all are done.

A worker that cannot hold all the training reviews streams its share of the files instead
(`input_cache="stream"`, or "auto" when the training files are larger than
`memory_budget_bytes`), with the same batch shapes. Then each pipeline's steps come from its own
files: the global batches, and so what is learned, depend on the number of pipelines (exact
resume and one review per epoch still hold):

- Epoch e reads the pipeline's files in an order fixed by (seed, e), interleaved by chunks of
  `read_chunk` reviews, and shuffles each block of `shuffle_block` consecutive reviews
  by a permutation fixed by (seed, e, block): a review's place in the epoch is random within its
  block, not over the whole share.
  (Stateless, unlike `Dataset.shuffle`, whose seed must be a Python number once a global seed is
  set, as training sets it.)
- Each epoch is cut into windows of `sort_window_batches` steps, parsed whole (several in
  parallel) and bucketed as above; the last window of an epoch holds the whole steps that
  remain, and the fewer than one step of reviews left over are skipped in that epoch (each epoch
  skips others). Windows never span two epochs, so no step holds a review twice.
- Exact resume is kept: step s is a function of (seed, s) and the files, so `start_step=s`
  continues the exact sequence. To get there it reads (without parsing) up to one epoch of
  records, and counts the share's reviews once at the start.
- Evaluation reads the files in order and sorts windows of `sort_window_batches` batches by
  length (padding is a little higher than with everything sorted); each review once.

Batches are `(tokens, labels)`: int32[batch, time] ids right-padded with 0 (what a masked cuDNN
LSTM needs), truncated to `max_length` keeping the `keep` end; no row is all padding.
"""

import dataclasses

from absl import logging
import tensorflow as tf

from trainer import config as config_lib
from trainer.data import batching
from trainer.data import records
from trainer.data import streaming
from trainer.data import text

READ_CHUNK = 1024  # Serialized reviews read (and, when loading, parsed) together.
_MAX_PARALLEL_READS = 8
_EPOCH_SALT = 0  # Third seed word of the per-epoch permutation.
_BATCH_ORDER_SALT = 1  # Third seed word of the batch order inside a window.
MEMORY_BUDGET_BYTES = 2 << 30  # "auto" streams a share whose files are larger than this.


def make_dataset(files, per_replica_batch_size, options=config_lib.InputConfig(), *, training,
                 seed=0, input_context=None, start_step=0, endless=False,
                 memory_budget_bytes=MEMORY_BUDGET_BYTES, read_chunk=READ_CHUNK,
                 shuffle_block=streaming.SHUFFLE_BLOCK):
  """Builds the batches one input pipeline feeds to its replicas.

  Args:
    files: list of TFRecord paths of one split (see `prepared_dataset.split_files`).
    per_replica_batch_size: reviews per batch.
    options: a `config.InputConfig`: `max_length` and `keep` (truncation); `sort_window_batches`
      (training: batches sorted by length together, lowered to fit in half the reviews of the
      pipeline, see the module docstring; evaluation: batches gathered in memory or sorted
      when streaming together); `input_cache` ("memory", "stream", or "auto": stream when this
      pipeline's files are larger than `memory_budget_bytes`).
    training: endless shuffled stream of full batches (True), or each review once (False).
    seed: fixes the training order; each (seed, epoch) has its own permutation.
    input_context: `tf.distribute.InputContext` of this pipeline, or None for a single one.
    start_step: training only: the first batch is the one step `start_step` would get.
    endless: evaluation only: after the reviews, yield filler batches of `per_replica_batch_size`
      reviews with label -1 (to be ignored) forever.
    memory_budget_bytes: the size of files that "auto" still holds in memory.
    read_chunk: serialized reviews read (and, when loading, parsed) together.
    shuffle_block: streaming: serialized reviews shuffled together.

  Returns:
    A `tf.data.Dataset` of (tokens int32[batch, time], labels int32[batch]).
  """
  if per_replica_batch_size < 1:
    raise ValueError(f"per_replica_batch_size must be positive, got {per_replica_batch_size}.")
  replicas = _Replicas.of(input_context)
  parse = _parser(options.max_length, options.keep)
  if training and not _streams(options.input_cache, _checked(files), None, memory_budget_bytes):
    # All the reviews, the same global stream on every pipeline: see the module docstring.
    reviews = _load_reviews(_serialized_chunks(_checked(files), None, read_chunk)(), parse)
    return _in_memory_training_batches(reviews, per_replica_batch_size, replicas, seed,
                                       start_step, options.sort_window_batches).prefetch(
                                           tf.data.AUTOTUNE)
  files, record_shard = _files_for_this_pipeline(files, input_context)
  chunks = _serialized_chunks(files, record_shard, read_chunk)
  if _streams(options.input_cache, files, record_shard, memory_budget_bytes):
    batches = streaming.make_batches(
        chunks, parse, per_replica_batch_size, training=training, replicas=replicas.local,
        seed=seed, start_step=start_step, sort_window_batches=options.sort_window_batches,
        shuffle_block=shuffle_block)
  else:
    batches = _in_memory_evaluation_batches(_load_reviews(chunks(), parse),
                                            per_replica_batch_size, options.sort_window_batches)
  if endless and not training:
    filler = (tf.fill([per_replica_batch_size, 1], text.OOV_ID),
              tf.fill([per_replica_batch_size], -1))
    batches = batches.concatenate(tf.data.Dataset.from_tensors(filler).repeat())
  return batches.prefetch(tf.data.AUTOTUNE)


@dataclasses.dataclass(frozen=True)
class _Replicas:
  """The replicas of all pipelines, and those this pipeline feeds (consecutive in replica order)."""
  total: int  # Over all pipelines (num_replicas_in_sync).
  local: int  # Fed by this pipeline.
  first: int  # The replica id of this pipeline's first one.

  @classmethod
  def of(cls, input_context):
    """The replicas of an `InputContext` (None: one pipeline with one replica)."""
    if input_context is None:
      return cls(1, 1, 0)
    local = input_context.num_replicas_in_sync // input_context.num_input_pipelines
    return cls(input_context.num_replicas_in_sync, local,
               input_context.input_pipeline_id * local)


def _checked(files):
  """`files` as a list; raises ValueError when there are none."""
  files = list(files)
  if not files:
    raise ValueError("No TFRecord files given.")
  return files


def _streams(input_cache, files, record_shard, memory_budget_bytes):
  """Whether this pipeline streams its files (see `make_dataset`'s `input_cache`)."""
  if input_cache != "auto":
    return input_cache == "stream"
  share = sum(tf.io.gfile.stat(path).length for path in files) / (
      record_shard[0] if record_shard else 1)
  streams = share > memory_budget_bytes
  logging.info("input_cache=auto: the files this pipeline would hold are %.0f MB, %s the budget "
               "of %.0f MB: %s.", share / 1e6, "over" if streams else "within",
               memory_budget_bytes / 1e6, "streaming it" if streams else "holding it in memory")
  return streams


def _in_memory_training_batches(reviews, per_replica_batch_size, replicas, seed, start_step,
                                sort_window_batches):
  """This pipeline's training batches: its replicas' rows of each step of the global stream.

  Args:
    reviews: `_load_reviews` of all the training reviews.
    per_replica_batch_size: reviews per replica and step.
    replicas: the `_Replicas` of this pipeline.
    seed, start_step, sort_window_batches: as in `make_dataset`.
  """
  def padded_batches(tokens, labels):
    """The batches, from the window of `start_step` on; windows are gathered in parallel."""
    windows, skipped_steps = _training_windows(
        tf.size(labels, out_type=tf.int64), tokens.row_lengths(), per_replica_batch_size,
        replicas.total, seed, start_step, sort_window_batches)
    step_size = per_replica_batch_size * replicas.total
    first, end = (per_replica_batch_size * replicas.first,
                  per_replica_batch_size * (replicas.first + replicas.local))
    ours = windows.map(lambda window: tf.reshape(  # Of each step, this pipeline's replicas' rows.
        tf.reshape(window, [-1, step_size])[:, first:end], [-1]))
    return (ours.map(lambda order: batching.in_order(tokens, labels, order),
                     num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
            .flat_map(lambda *window: batching.padded_batches(*window, per_replica_batch_size))
            .skip(skipped_steps * replicas.local))

  return reviews.flat_map(padded_batches)


def _in_memory_evaluation_batches(reviews, batch_size, sort_window_batches):
  """Each review of this pipeline once, sorted by length (held in memory for every evaluation)."""
  def padded_batches(tokens, labels):
    """The batches; `sort_window_batches` batches are gathered at a time."""
    windows = tf.data.Dataset.from_tensors(tf.argsort(tokens.row_lengths(), stable=True)).rebatch(
        batch_size * sort_window_batches)  # Copies one window at a time.
    return (windows.map(lambda order: batching.in_order(tokens, labels, order),
                        num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
            .flat_map(lambda *window: batching.padded_batches(*window, batch_size)))

  return reviews.cache().flat_map(padded_batches)


def make_synthetic_dataset(per_replica_batch_size, max_length, vocab_size, seed=0):
  """Endless generated batches shaped like `make_dataset`'s, for throughput checks without data.

  Returns:
    A dataset of (tokens int32[batch, time], labels int32[batch]); lengths are uniform in
    [max_length / 4, max_length], ids uniform in the vocabulary.
  """
  def batch(step):
    """Batch `step`, a function of (seed, step) only."""
    seeds = [tf.stack([tf.constant(seed, tf.int64), 3 * step + salt]) for salt in range(3)]
    lengths = tf.random.stateless_uniform([per_replica_batch_size], seeds[0],
                                          minval=max(1, max_length // 4), maxval=max_length + 1,
                                          dtype=tf.int32)
    time = tf.reduce_max(lengths)
    ids = tf.random.stateless_uniform([per_replica_batch_size, time], seeds[1],
                                      minval=len(text.RESERVED_TOKENS), maxval=vocab_size,
                                      dtype=tf.int32)
    tokens = tf.where(tf.sequence_mask(lengths, time), ids, text.PAD_ID)
    labels = tf.random.stateless_uniform([per_replica_batch_size], seeds[2], maxval=2,
                                         dtype=tf.int32)
    return tokens, labels

  return (tf.data.Dataset.range(tf.int64.max)
          .map(batch, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
          .prefetch(tf.data.AUTOTUNE))


def _files_for_this_pipeline(files, input_context):
  """Returns (this pipeline's files, (num_pipelines, index) to shard records by, or None)."""
  files = _checked(files)
  if input_context is None or input_context.num_input_pipelines == 1:
    return files, None
  count, index = input_context.num_input_pipelines, input_context.input_pipeline_id
  if len(files) >= count:
    return files[index::count], None
  logging.warning(
      "Only %d files for %d input pipelines: each pipeline reads all files and keeps every "
      "%d-th review (it parses %dx more than it needs). Prepare with --num_shards=%d or more "
      "so that each worker reads whole files.", len(files), count, count, count, count)
  return files, (count, index)


def _serialized_chunks(files, record_shard, read_chunk):
  """This pipeline's serialized reviews in chunks, as a function of the order of the files.

  Args:
    files, record_shard: from `_files_for_this_pipeline`.
    read_chunk: reviews per chunk.

  Returns:
    `chunks(file_order_seed=None)`: a dataset of string[at most `read_chunk`], consecutive
    reviews of one file; up to `_MAX_PARALLEL_READS` files are read at a time, their chunks
    taken in turn. The files are in the order of `file_order_seed` (int64[3]) when it is given.
  """
  def read(path):
    """One file's chunks (its share of them with `record_shard`)."""
    serialized = tf.data.TFRecordDataset(path)
    if record_shard:
      serialized = serialized.shard(*record_shard)
    return serialized.batch(read_chunk)

  def chunks(file_order_seed=None):
    """The chunks (see above)."""
    paths = tf.constant(files)
    if file_order_seed is not None:
      paths = tf.gather(paths, batching.stateless_shuffle(
          tf.range(len(files), dtype=tf.int64), len(files) - 1, file_order_seed))
    return tf.data.Dataset.from_tensor_slices(paths).interleave(
        read, cycle_length=min(len(files), _MAX_PARALLEL_READS),
        num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)

  return chunks


def _parser(max_length, keep):
  """`parse(serialized string[n])` -> (RaggedTensor int32[kept, (time)], int32[kept]).

  The reviews are truncated to `max_length` keeping the `keep` end; empty ones are dropped.
  """
  def parse(serialized):
    """Parses, truncates and drops empty reviews."""
    tokens, labels = records.parse(serialized)
    not_empty = tf.where(tokens.row_lengths() > 0)[:, 0]
    return (batching.truncated_rows(tokens, not_empty, max_length, keep),
            tf.gather(labels, not_empty))

  return parse


def _load_reviews(chunks, parse):
  """Reads the reviews of the dataset of serialized `chunks` into one element, parsed by `parse`.

  Returns:
    A dataset of one element (tokens, labels): RaggedTensor int32[reviews, (time)] and
    int32[reviews].
  """
  def parse_chunk(chunk):
    """A chunk's flat ids, row lengths and labels."""
    tokens, labels = parse(chunk)
    return tokens.flat_values, tokens.row_lengths(), labels

  def append(arrays, chunk):
    """Appends a chunk's tensors to the arrays of all chunks."""
    return tuple(array.write(array.size(), part) for array, part in zip(arrays, chunk))

  def load_all(_):
    """Parses the chunks in parallel and joins them into one element."""
    arrays = tuple(tf.TensorArray(dtype, size=0, dynamic_size=True, infer_shape=False,
                                  element_shape=[None])
                   for dtype in (tf.int32, tf.int64, tf.int32))
    values, row_lengths, labels = (array.concat() for array in chunks.map(
        parse_chunk, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True).reduce(
            arrays, append))
    tf.debugging.assert_positive(
        tf.size(labels), message="This input pipeline got no reviews: its files are empty or "
        "there are more input pipelines than reviews.")
    return tf.data.Dataset.from_tensors(
        (tf.RaggedTensor.from_row_lengths(values, row_lengths), labels))

  return tf.data.Dataset.from_tensors(0).flat_map(load_all)


def _training_windows(num_reviews, lengths, batch_size, replicas, seed, start_step,
                      sort_window_batches):
  """Endless length-bucketed windows of the stream described in the module docstring.

  Args:
    num_reviews: int64 scalar, N.
    lengths: int64[N], the length of each review.
    batch_size: reviews per replica.
    replicas: replicas of all pipelines; each step takes `replicas` consecutive batches.
    seed, start_step, sort_window_batches: as in `make_dataset`.

  Returns:
    (windows, skipped): a dataset of windows, each int64[steps * replicas * batch_size], the
    review indices of its per-replica batches one after the other (`replicas` consecutive ones
    per step), from the window of `start_step` on; and how many steps of the first window come
    before `start_step`.
  """
  step_size = batch_size * replicas
  window_steps, one_order = _window_steps(num_reviews, step_size, sort_window_batches)
  window_size = window_steps * step_size

  def permutation(index, epoch):
    """Review at each position `index` of epoch `epoch`'s permutation, before its tail moves."""
    epoch = tf.broadcast_to(tf.where(one_order, tf.zeros_like(epoch), epoch), tf.shape(index))
    seeds = tf.stack([tf.fill(tf.shape(index), tf.constant(seed, tf.int64)), epoch,
                      tf.fill(tf.shape(index), tf.constant(_EPOCH_SALT, tf.int64))], axis=1)
    return batching.stateless_shuffle(index, num_reviews - 1, seeds)

  def tail(epoch):
    """Reviews of the last `window_size` positions of `epoch`, in their rearranged order."""
    shared = -(epoch + 1) * num_reviews % window_size  # Next epoch's share of their window.
    head = tf.range(tf.maximum(shared, 1))  # Not empty: the op refuses empty indices.
    in_next_share = tf.math.unsorted_segment_max(
        tf.cast(head < shared, tf.int32), permutation(head, epoch + 1), num_reviews) > 0
    reviews = permutation(num_reviews - window_size + tf.range(window_size), epoch)
    moved = tf.gather(in_next_share, reviews)
    # The window shared with the next epoch holds its first `shared` (before its tail: not moved)
    # and our last `window_size - shared`: none of those, as the at most `shared` that are go first.
    return tf.concat([reviews[moved], reviews[~moved]], 0)

  def window_reviews(position):
    """Reviews at a window's stream positions, int64[window_size]."""
    epoch, index = position // num_reviews, position % num_reviews
    # A window of at most (N + 1) / 2 meets no tail but that of the epoch it starts in; one of
    # more than N (steps larger than N) moves nothing.
    in_tail = position - ((epoch[0] + 1) * num_reviews - window_size)
    in_tail = tf.where((window_size <= num_reviews) & (in_tail < window_size), in_tail, -1)
    tail_reviews = tf.cond(tf.reduce_max(in_tail) >= 0, lambda: tail(epoch[0]),
                           lambda: tf.zeros([window_size], tf.int64))
    return tf.where(in_tail >= 0, tf.gather(tail_reviews, tf.maximum(in_tail, 0)),
                    permutation(index, epoch))

  def window_batches(window):
    """Review indices of a window's per-replica batches, one after the other."""
    review = window_reviews(window * window_size + tf.range(window_size, dtype=tf.int64))
    return tf.gather(review, batching.bucketed_order(
        tf.gather(lengths, review), step_size,
        tf.stack([tf.constant(seed, tf.int64), window, tf.constant(_BATCH_ORDER_SALT, tf.int64)])))

  return (tf.data.Dataset.range(start_step // window_steps, tf.int64.max).map(window_batches),
          start_step % window_steps)


def _window_steps(num_reviews, step_size, sort_window_batches):
  """Steps per window and whether all epochs share one permutation (see the module docstring)."""
  fitting = (num_reviews + 1) // (2 * step_size)  # Most steps in (N + 1) / 2 reviews.
  too_big = step_size > num_reviews
  window_steps = tf.where(too_big, tf.constant(sort_window_batches, tf.int64),
                          tf.clip_by_value(fitting, 1, sort_window_batches))
  return window_steps, (fitting == 0) & (step_size < num_reviews)
