"""The streaming input mode: choice by size, batch shapes, epochs, exact resume, evaluation."""

import collections

import numpy as np
import pytest
import tensorflow as tf

from tests.data.test_input_pipeline import review_ids
from tests.data.test_input_pipeline import take
from tests.data.test_input_pipeline import write_reviews
from trainer.config import InputConfig
from trainer.data import input_pipeline


def stream(files, batch_size=4, max_length=100, sort_window_batches=64, training=True, **kwargs):
  """A streaming pipeline over `files`."""
  options = InputConfig(max_length=max_length, sort_window_batches=sort_window_batches,
                        input_cache="stream")
  return input_pipeline.make_dataset(files, batch_size, options, training=training, **kwargs)


def test_auto_streams_a_share_over_the_memory_budget(tmp_path):
  """A tiny budget makes "auto" stream, a large one hold in memory: same batches as each mode."""
  files = write_reviews(tmp_path, 40)
  batches = lambda cache, **kwargs: [review_ids(t) for t, _ in take(input_pipeline.make_dataset(
      files, 4, InputConfig(max_length=100, input_cache=cache), training=True, seed=2, **kwargs),
                                                                    15)]
  streamed, in_memory = batches("stream"), batches("memory")
  assert streamed != in_memory
  assert batches("auto", memory_budget_bytes=1) == streamed
  assert batches("auto", memory_budget_bytes=1 << 30) == in_memory


def test_streams_under_a_global_seed_as_training_sets_one(tmp_path):
  """Training calls keras.utils.set_random_seed: the stream must build and repeat under it."""
  files = write_reviews(tmp_path, 40)
  batches = lambda: [review_ids(t) for t, _ in take(stream(files, seed=3), 12)]
  tf.random.set_seed(7)
  try:
    assert batches() == batches()
  finally:
    tf.random.set_seed(None)


def test_batches_have_the_shapes_of_the_memory_mode(tmp_path):
  """int32, right-padded to the batch's longest review, no empty row, truncated."""
  files = write_reviews(tmp_path, 60, length=lambda i: 1 + (i * 37) % 97)
  for tokens, labels in take(stream(files, 8, max_length=50, sort_window_batches=3), 20):
    assert tokens.dtype == np.int32 and labels.dtype == np.int32 and tokens.shape[0] == 8
    lengths = (tokens != 0).sum(axis=1)
    assert (lengths > 0).all() and tokens.shape[1] == lengths.max() <= 50
    for row, length in zip(tokens, lengths):
      assert row[:length].all() and not row[length:].any()


def test_each_epoch_holds_distinct_reviews_and_skips_less_than_a_step(tmp_path):
  """50 reviews, steps of 4, windows of 3 steps: 12 steps per epoch, 2 reviews skipped each."""
  files = write_reviews(tmp_path, 50)
  batches = [review_ids(t) for t, _ in take(stream(files, seed=1, sort_window_batches=3), 36)]
  epochs = [sum(batches[start:start + 12], []) for start in (0, 12, 24)]
  for epoch in epochs:
    assert len(epoch) == len(set(epoch)) == 48 and set(epoch) <= set(range(50))
  assert epochs[0] != epochs[1]  # Each epoch has its own order.
  counts = collections.Counter(sum(epochs, []))
  assert set(counts) == set(range(50))  # The skipped reviews differ between epochs.


def test_bucketing_keeps_padding_low(tmp_path):
  """Windows sorted by length: padding far below padding to the longest review."""
  files = write_reviews(tmp_path, 96, length=lambda i: 1 + (i * 37) % 97)
  padded = true = 0
  for tokens, _ in take(stream(files, 8, sort_window_batches=4), 24):
    padded += tokens.size
    true += (tokens != 0).sum()
  assert padded / true < 1.3  # Padding to the longest review (97) would be about 2x.


@pytest.mark.parametrize("start_step", [1, 5, 13, 29])
def test_start_step_resumes_the_exact_sequence(tmp_path, start_step):
  """From step s (also past an epoch's end, with 2 replicas) the batches of an uninterrupted run."""
  files = write_reviews(tmp_path, 30, num_files=4)
  context = tf.distribute.InputContext(num_replicas_in_sync=2)
  make = lambda start, count: take(stream(
      files, 2, seed=3, start_step=start, sort_window_batches=2, input_context=context), count)
  uninterrupted = make(0, 2 * 40)
  resumed = make(start_step, 2 * (40 - start_step))
  assert len(resumed) == len(uninterrupted) - 2 * start_step
  for (a_tokens, a_labels), (b_tokens, b_labels) in zip(uninterrupted[2 * start_step:], resumed):
    np.testing.assert_array_equal(a_tokens, b_tokens)
    np.testing.assert_array_equal(a_labels, b_labels)


def test_no_step_holds_a_review_twice(tmp_path):
  """Over many epochs, the reviews of a step (both replicas) are distinct."""
  files = write_reviews(tmp_path, 37, length=lambda i: 1 + i % 3)  # Many equal lengths.
  context = tf.distribute.InputContext(num_replicas_in_sync=2)
  ids = [review_ids(t) for t, _ in take(stream(files, 3, sort_window_batches=2,
                                               input_context=context), 2 * 60)]
  for start in range(0, len(ids), 2):
    step = ids[start] + ids[start + 1]
    assert len(set(step)) == len(step), start // 2


def test_evaluation_yields_each_review_once_per_worker_share(tmp_path):
  """Two workers stream disjoint files that cover every review once, windows sorted by length."""
  files = write_reviews(tmp_path, 30, num_files=4)
  seen = []
  for index in range(2):
    context = tf.distribute.InputContext(num_input_pipelines=2, input_pipeline_id=index,
                                         num_replicas_in_sync=2)
    batches = take(stream(files, 4, training=False, sort_window_batches=2,
                          input_context=context), 100)
    ids = [i for tokens, _ in batches for i in review_ids(tokens)]
    assert len(ids) == len(set(ids))
    lengths = [n for tokens, _ in batches[:2] for n in (tokens != 0).sum(1)]
    assert lengths == sorted(lengths)  # The first window of 2 batches is sorted.
    seen.append(set(ids))
  assert not seen[0] & seen[1] and seen[0] | seen[1] == set(range(30))


def test_an_empty_review_is_a_clear_error(tmp_path):
  """Streaming cannot skip an empty review without losing its step alignment: it says so."""
  files = write_reviews(tmp_path, 20, length=lambda i: 0 if i == 7 else 3)
  with pytest.raises(tf.errors.InvalidArgumentError, match="empty review.*prepare.*memory"):
    take(stream(files, sort_window_batches=2), 5)


def test_fewer_reviews_than_a_step_is_a_clear_error(tmp_path):
  """A share smaller than one step cannot be streamed: the error names the memory mode."""
  files = write_reviews(tmp_path, 3, num_files=1)
  with pytest.raises(tf.errors.InvalidArgumentError, match="input_cache=memory"):
    take(stream(files, 4), 1)


def test_chunks_blocks_and_windows_that_do_not_align_keep_every_property(tmp_path):
  """Chunks of 3, shuffle blocks of 7, windows of 8: epochs of distinct reviews, exact resume."""
  files = write_reviews(tmp_path, 38, num_files=3)
  make = lambda start, count: [review_ids(t) for t, _ in take(stream(
      files, 4, seed=5, start_step=start, sort_window_batches=2, read_chunk=3, shuffle_block=7),
      count)]
  batches = make(0, 27)  # 9 steps per epoch (2 reviews skipped), 3 epochs.
  for start in (0, 9, 18):
    epoch = sum(batches[start:start + 9], [])
    assert len(epoch) == len(set(epoch)) == 36 and set(epoch) <= set(range(38))
  assert batches[:9] != batches[9:18]
  assert make(0, 27) == batches
  assert make(5, 22) == batches[5:] and make(12, 15) == batches[12:]
