"""The input pipeline: padding, truncation, sharding, determinism, resume, bucketing, helpers."""

import collections
import logging

import numpy as np
import pytest
import tensorflow as tf

from trainer.config import InputConfig
from trainer.data import batching
from trainer.data import input_pipeline
from trainer.data import prepared_dataset
from trainer.data import records


def write_reviews(tmp_path, num_reviews, num_files=3, length=lambda i: 1 + (i * 7) % 23):
  """Writes reviews whose tokens all equal `i + 2` (review i is recognizable); returns paths."""
  paths = [str(tmp_path / f"part-{f}.tfrecord") for f in range(num_files)]
  writers = [tf.io.TFRecordWriter(p) for p in paths]
  for i in range(num_reviews):
    writers[i % num_files].write(records.serialize([i + 2] * length(i), i % 2, 0, f"r{i}"))
  for writer in writers:
    writer.close()
  return paths


def review_ids(tokens):
  """Which review each row of a batch is (its first token minus 2)."""
  return [int(row[0]) - 2 for row in tokens]


def take(dataset, count):
  """The first `count` batches as numpy (tokens, labels) pairs."""
  return [(t.numpy(), l.numpy()) for t, l in dataset.take(count)]


def test_batches_are_right_padded_int32_with_no_empty_rows(prepared_dir):
  """Ids first, then zeros; each row has at least one token; labels match."""
  files = prepared_dataset.split_files(prepared_dir, "train")
  for training in (True, False):
    for tokens, labels in take(input_pipeline.make_dataset(files, 8, InputConfig(max_length=30),
                                                           training=training), 10):
      assert tokens.dtype == np.int32 and labels.dtype == np.int32
      lengths = (tokens != 0).sum(axis=1)
      assert (lengths > 0).all()
      for row, length in zip(tokens, lengths):
        assert row[:length].all() and not row[length:].any()  # Right-padded.
      assert tokens.shape[1] == lengths.max() <= 30


@pytest.mark.parametrize("keep", ["first", "last"])
def test_truncation_keeps_the_chosen_end(tmp_path, keep):
  """Long reviews are cut to max_length from the other end."""
  path = str(tmp_path / "one.tfrecord")
  with tf.io.TFRecordWriter(path) as writer:
    writer.write(records.serialize(list(range(2, 12)), 1, 0, "long"))
    writer.write(records.serialize([], 0, 0, "empty"))
  (tokens, labels), = take(input_pipeline.make_dataset(
      [path], 4, InputConfig(max_length=4, keep=keep), training=False), 1)
  assert labels.tolist() == [1]  # The empty review is dropped, never an all-padding row.
  assert tokens.tolist() == [[2, 3, 4, 5] if keep == "first" else [8, 9, 10, 11]]


def test_every_review_once_per_epoch(tmp_path):
  """When an epoch spans whole windows, each epoch's batches hold each review exactly once."""
  files = write_reviews(tmp_path, 48)
  batches = take(input_pipeline.make_dataset(
      files, 4, InputConfig(max_length=100, sort_window_batches=3), training=True, seed=3), 24)
  for epoch in (batches[:12], batches[12:]):
    assert sorted(i for tokens, _ in epoch for i in review_ids(tokens)) == list(range(48))
  first, second = ([review_ids(t) for t, _ in epoch] for epoch in (batches[:12], batches[12:]))
  assert first != second  # Each epoch has its own order.


def test_stream_is_balanced_when_epochs_and_windows_do_not_align(tmp_path):
  """Over lcm(reviews, window) positions every review appears equally often."""
  files = write_reviews(tmp_path, 50)
  batches = take(input_pipeline.make_dataset(
      files, 4, InputConfig(max_length=100, sort_window_batches=3), training=True),
                 75)  # 75 * 4 = lcm(50, 12)
  counts = collections.Counter(i for tokens, _ in batches for i in review_ids(tokens))
  assert set(counts) == set(range(50)) and set(counts.values()) == {6}


def test_bucketing_sorts_each_window_and_cuts_padding(tmp_path):
  """Batches of a window hold disjoint length ranges; padding is far below fixed padding."""
  files = write_reviews(tmp_path, 96, length=lambda i: 1 + (i * 37) % 97)
  window = 4
  batches = take(input_pipeline.make_dataset(
      files, 8, InputConfig(max_length=100, sort_window_batches=window), training=True), 12)
  padded = true = 0
  for start in range(0, len(batches), window):
    ranges = sorted(((t != 0).sum(1).min(), (t != 0).sum(1).max())
                    for t, _ in batches[start:start + window])
    assert all(high <= next_low for (_, high), (next_low, _) in zip(ranges, ranges[1:]))
  for tokens, _ in batches:
    padded += tokens.size
    true += (tokens != 0).sum()
  assert padded / true < 1.3  # Padding to the longest review (97) would be about 2x.


def test_same_seed_same_batches_other_seed_other_batches(tmp_path):
  """The training order is a function of the seed."""
  files = write_reviews(tmp_path, 40)
  make = lambda seed: [review_ids(t) for t, _ in take(input_pipeline.make_dataset(
      files, 4, InputConfig(max_length=100, sort_window_batches=2), training=True, seed=seed), 20)]
  assert make(5) == make(5)
  assert make(5) != make(6)


@pytest.mark.parametrize("start_step", [1, 5, 17])
def test_start_step_resumes_the_exact_sequence(tmp_path, start_step):
  """Starting at step s gives the batches an uninterrupted run gets from step s on."""
  files = write_reviews(tmp_path, 30)
  make = lambda start: take(input_pipeline.make_dataset(
      files, 4, InputConfig(max_length=100, sort_window_batches=3), training=True, seed=1,
      start_step=start), 25 - start)
  uninterrupted = make(0)
  resumed = make(start_step)
  assert len(resumed) == len(uninterrupted) - start_step
  for (a_tokens, a_labels), (b_tokens, b_labels) in zip(uninterrupted[start_step:], resumed):
    np.testing.assert_array_equal(a_tokens, b_tokens)
    np.testing.assert_array_equal(a_labels, b_labels)


def test_evaluation_yields_each_review_once_sorted_by_length(tmp_path):
  """Evaluation: all reviews once, shortest first, the last batch smaller; same every time."""
  files = write_reviews(tmp_path, 30)
  dataset = input_pipeline.make_dataset(files, 8, InputConfig(max_length=100), training=False)
  batches = take(dataset, 100)
  assert [len(labels) for _, labels in batches] == [8, 8, 8, 6]
  assert sorted(i for t, _ in batches for i in review_ids(t)) == list(range(30))
  lengths = [n for t, _ in batches for n in (t != 0).sum(1)]
  assert lengths == sorted(lengths)
  assert [review_ids(t) for t, _ in take(dataset, 100)] == [review_ids(t) for t, _ in batches]


def global_steps(files, pipelines, replicas_per_pipeline, per_replica, steps, start_step=0):
  """The reviews of each step over all pipelines, in replica order, for a cluster shape."""
  replicas = pipelines * replicas_per_pipeline
  batches = [take(input_pipeline.make_dataset(
      files, per_replica, InputConfig(max_length=100, sort_window_batches=2), training=True,
      seed=4, start_step=start_step, input_context=tf.distribute.InputContext(
          pipelines, index, replicas)), steps * replicas_per_pipeline)
             for index in range(pipelines)]
  return [sum((review_ids(batches[index][step * replicas_per_pipeline + local][0])
               for index in range(pipelines) for local in range(replicas_per_pipeline)), [])
          for step in range(steps)]


def test_every_cluster_shape_trains_on_the_same_global_batches(tmp_path):
  """One device, 2 replicas of one pipeline, 2 pipelines (workers), 2 x 2: the same reviews in
  each step, in the same order, also from a resumed step; files need not divide among them."""
  files = write_reviews(tmp_path, 50, num_files=3)
  one_device = global_steps(files, 1, 1, 8, steps=20)
  assert len({i for step in one_device for i in step}) == 50
  for pipelines, local, per_replica in ((1, 2, 4), (2, 1, 4), (2, 2, 2)):
    assert global_steps(files, pipelines, local, per_replica, steps=20) == one_device
  assert global_steps(files, 2, 1, 4, steps=13, start_step=7) == one_device[7:]


def pipeline_reviews(files, num_pipelines, training=False):
  """Review ids read by each of `num_pipelines` input pipelines (one pass of evaluation)."""
  seen = []
  for index in range(num_pipelines):
    context = tf.distribute.InputContext(num_input_pipelines=num_pipelines,
                                         input_pipeline_id=index, num_replicas_in_sync=2)
    dataset = input_pipeline.make_dataset(files, 4, InputConfig(max_length=100), training=training,
                                          input_context=context)
    seen.append({i for t, _ in take(dataset, 100) for i in review_ids(t)})
  return seen


def test_each_worker_reads_whole_files_when_there_are_enough(tmp_path):
  """With >= one file per worker, workers read disjoint files that cover everything."""
  files = write_reviews(tmp_path, 30, num_files=4)
  first, second = pipeline_reviews(files, 2)
  assert not first & second and first | second == set(range(30))
  assert first == {i for i in range(30) if i % 4 in (0, 2)}  # Files 0 and 2: whole files.


def test_too_few_files_fall_back_to_record_sharding_and_say_so(tmp_path, caplog):
  """With fewer files than workers, each keeps every n-th review, with a warning."""
  files = write_reviews(tmp_path, 30, num_files=1)
  with caplog.at_level(logging.WARNING):
    first, second = pipeline_reviews(files, 2)
  assert not first & second and first | second == set(range(30))
  assert "Only 1 files for 2 input pipelines" in caplog.text and "--num_shards=2" in caplog.text


def test_bad_arguments_are_refused(tmp_path):
  """Unknown `keep` and non-positive sizes are errors, not silent defaults."""
  files = write_reviews(tmp_path, 4)
  with pytest.raises(ValueError, match="keep='middle': choose one of"):
    input_pipeline.make_dataset(files, 4, InputConfig(max_length=10, keep="middle"), training=True)
  with pytest.raises(ValueError, match="max_length=0: it must be positive"):
    input_pipeline.make_dataset(files, 4, InputConfig(max_length=0), training=True)
  with pytest.raises(ValueError, match="positive"):
    input_pipeline.make_dataset(files, 0, InputConfig(max_length=10), training=True)
  with pytest.raises(ValueError, match="No TFRecord files"):
    input_pipeline.make_dataset([], 4, InputConfig(max_length=10), training=True)


@pytest.mark.parametrize("num_reviews,batch_size,replicas,window", [
    (37, 4, 1, 3), (37, 2, 2, 3),  # Windows of 12 that epochs share.
    (37, 5, 1, 1),  # Windows of one step.
    (23, 3, 2, 5),  # Windows lowered to 2 steps, to fit in half the reviews.
    (11, 4, 2, 2)])  # Steps of 8 of 11 reviews: one permutation for all epochs.
def test_no_step_holds_a_review_twice(tmp_path, num_reviews, batch_size, replicas, window):
  """Over many epochs, the reviews of a step (all replicas) are distinct."""
  files = write_reviews(tmp_path, num_reviews, length=lambda i: 1 + i % 3)  # Many equal lengths.
  context = tf.distribute.InputContext(num_replicas_in_sync=replicas)
  batches = take(input_pipeline.make_dataset(
      files, batch_size, InputConfig(max_length=100, sort_window_batches=window), training=True,
      input_context=context), 300 * replicas)
  ids = [review_ids(tokens) for tokens, _ in batches]
  for start in range(0, len(ids), replicas):
    step = sum(ids[start:start + replicas], [])
    assert len(set(step)) == len(step), (start // replicas, step)


@pytest.mark.parametrize("keep", ["first", "last"])
def test_truncated_rows_gathers_and_cuts_rows_in_one_gather(keep):
  """Any rows, in any order, each cut to max_length at the kept end (empty rows stay empty)."""
  rows = [[1, 2, 3, 4, 5], [], [6], [7, 8, 9], [10, 11, 12, 13]]
  tokens = tf.ragged.constant(rows, dtype=tf.int64)
  picked = [4, 0, 1, 3, 0]
  cut = batching.truncated_rows(tokens, tf.constant(picked, tf.int64), 3, keep).to_list()
  assert cut == [rows[i][-3:] if keep == "last" else rows[i][:3] for i in picked]


def test_padded_batches_are_consecutive_rows_with_a_smaller_last_batch():
  """Rows in order, batch by batch, each batch padded to its own longest row."""
  tokens = tf.ragged.constant([[1], [2, 2], [3, 3, 3], [4], [5, 5]], dtype=tf.int32)
  batches = take(batching.padded_batches(tokens, tf.range(5), 2), 10)
  assert [t.tolist() for t, _ in batches] == [[[1, 0], [2, 2]], [[3, 3, 3], [4, 0, 0]], [[5, 5]]]
  assert [l.tolist() for _, l in batches] == [[0, 1], [2, 3], [4]]


def test_bucketed_order_sorts_steps_and_orders_them_by_the_seed():
  """Each step holds reviews of neighbouring lengths; the step order is a function of the seed."""
  lengths = tf.constant([9, 1, 8, 2, 7, 3, 6, 4, 5, 0, 11, 10], tf.int64)
  order = lambda seed: batching.bucketed_order(lengths, 3, tf.constant([seed, 0, 0], tf.int64))
  steps = np.reshape(tf.gather(lengths, order(1)).numpy(), [4, 3])
  assert sorted(map(sorted, steps.tolist())) == [[0, 1, 2], [3, 4, 5], [6, 7, 8], [9, 10, 11]]
  assert sorted(order(1).numpy().tolist()) == list(range(12))
  assert [order(seed).numpy().tolist() for seed in range(5)] != [order(1).numpy().tolist()] * 5


def test_loading_in_many_chunks_reads_every_review_once(tmp_path):
  """Reviews read and parsed in chunks (here of 4) are joined into one share: each once, whole."""
  files = write_reviews(tmp_path, 30)
  batches = take(input_pipeline.make_dataset(files, 8, InputConfig(max_length=100),
                                             training=False, read_chunk=4), 10)
  assert sorted(i for t, _ in batches for i in review_ids(t)) == list(range(30))
  for tokens, labels in batches:
    for row, label, i in zip(tokens, labels, review_ids(tokens)):
      assert (row != 0).sum() == 1 + (i * 7) % 23 and label == i % 2  # As written.
