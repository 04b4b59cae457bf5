r"""Input pipeline benchmark: ours vs `padded_batch` vs `bucket_by_sequence_length`, and prepare.

  python benchmarks/input_pipeline.py [--data=../shared/data/aclImdb_v1_labeled.tar.gz]

Prepares the tarball with the real command (timed end to end, Python start-up included), then
reads the train split at the same batch size and max_length with three pipelines, each cached
in memory and timed after a warm-up pass. Without the tarball it generates one of the same size.
The last line is one JSON object with every number.
"""

import json
import os
import tempfile
import time

from absl import app
from absl import flags
import tensorflow as tf

import common
from trainer.data import input_pipeline
from trainer.data import prepared_dataset
from trainer.data import records

FLAGS = flags.FLAGS
flags.DEFINE_string("data", common.DEFAULT_DATA, "aclImdb tarball; generated when missing.")
flags.DEFINE_integer("per_replica_batch_size", 128, "Reviews per batch.")
flags.DEFINE_integer("max_length", 500, "Longest sequence kept (the last tokens).")
flags.DEFINE_integer("batches", 1000, "Batches timed per pipeline, after the warm-up.")
flags.DEFINE_integer("bucket_width", 50, "Bucket width for bucket_by_sequence_length.")


def per_example_reviews(files, max_length):
  """The textbook pipeline's start: parse each review, keep the last tokens, cache."""
  def parse_one(serialized):
    """Parses one review into (int32[time], int32[])."""
    tokens, labels = records.parse(tf.expand_dims(serialized, 0))
    return tokens[0][-max_length:], labels[0]
  return (tf.data.TFRecordDataset(files).map(parse_one, num_parallel_calls=tf.data.AUTOTUNE)
          .cache().shuffle(50000, seed=0).repeat())


def padded_batch_pipeline(files, batch_size, max_length):
  """`padded_batch` to a fixed max_length, as in the Keras example."""
  return (per_example_reviews(files, max_length)
          .padded_batch(batch_size, padded_shapes=([max_length], []))
          .prefetch(tf.data.AUTOTUNE))


def bucket_by_sequence_length_pipeline(files, batch_size, max_length, bucket_width):
  """The built-in `bucket_by_sequence_length`, buckets `bucket_width` tokens wide."""
  boundaries = list(range(bucket_width + 1, max_length + 1, bucket_width))
  return (per_example_reviews(files, max_length)
          .bucket_by_sequence_length(lambda tokens, label: tf.shape(tokens)[0], boundaries,
                                     [batch_size] * (len(boundaries) + 1))
          .prefetch(tf.data.AUTOTUNE))


def measure(dataset, warmup_batches, timed_batches):
  """Examples/s over `timed_batches` after a warm-up, and padding over the same batches.

  Returns:
    Dict with examples_per_s, padded_tokens_per_example and padding_ratio.
  """
  iterator = iter(dataset)
  for _ in range(warmup_batches):
    next(iterator)
  examples = 0
  start = time.perf_counter()
  for _ in range(timed_batches):
    _, labels = next(iterator)
    examples += labels.shape[0]
  seconds = time.perf_counter() - start
  padded = true = counted = 0
  for _ in range(timed_batches):  # Untimed: the same amount of data, for padding statistics.
    tokens, _ = next(iterator)
    padded += tokens.shape[0] * tokens.shape[1]
    true += int(tf.math.count_nonzero(tokens))
    counted += tokens.shape[0]
  return {"examples_per_s": round(examples / seconds), "padded_tokens_per_example":
          round(padded / counted, 1), "padding_ratio": round(padded / true, 4)}


def main(argv):
  """Prepares the data, measures the three pipelines, prints the numbers."""
  del argv
  workdir = tempfile.mkdtemp(prefix="input_pipeline_benchmark_")
  tarball = common.tarball_or_generated(FLAGS.data, workdir)
  data_dir = os.path.join(workdir, "prepared")
  results = {"data": os.path.abspath(tarball),
             "prepare_seconds": round(common.prepare(tarball, data_dir), 2)}
  metadata = prepared_dataset.load_metadata(data_dir)
  files = prepared_dataset.split_files(data_dir, "train", metadata)
  batch, max_length = FLAGS.per_replica_batch_size, FLAGS.max_length
  epoch_batches = metadata["splits"]["train"]["examples"] // batch + 1
  pipelines = {
      "padded_batch": padded_batch_pipeline(files, batch, max_length),
      "bucket_by_sequence_length": bucket_by_sequence_length_pipeline(
          files, batch, max_length, FLAGS.bucket_width),
      "ours": input_pipeline.make_dataset(files, batch, training=True, max_length=max_length),
  }
  print(f"train split: {metadata['splits']['train']['examples']} reviews; batch {batch}, "
        f"max_length {max_length}; prepare took {results['prepare_seconds']} s")
  for name, dataset in pipelines.items():
    numbers = measure(dataset, warmup_batches=epoch_batches, timed_batches=FLAGS.batches)
    print(f"{name:>26}: {numbers['examples_per_s']:>9,} examples/s, "
          f"{numbers['padded_tokens_per_example']:>6} padded tokens/example, "
          f"padding ratio {numbers['padding_ratio']}")
    results.update({f"{name}_{key}": value for key, value in numbers.items()})
  results["ours_vs_bucket_by_sequence_length"] = round(
      results["ours_examples_per_s"] / results["bucket_by_sequence_length_examples_per_s"], 1)
  results.update(per_replica_batch_size=batch, max_length=max_length, batches=FLAGS.batches)
  print(json.dumps(results))


if __name__ == "__main__":
  app.run(main)
