r"""Input pipeline benchmark: ours vs `padded_batch` vs `bucket_by_sequence_length`, and prepare.

  python benchmarks/input_pipeline.py [--data=../shared/data/aclImdb_v1_labeled.tar.gz]

Prepares the tarball with the real command (timed end to end, Python start-up included), then
reads the train split at the same batch size and max_length with each pipeline (ours in memory
and streaming), each cached in memory (ours: held, or streamed) and timed after a warm-up pass.
The batches are consumed inside a tf.function (`Dataset.reduce`), so what is measured is what
the pipeline delivers, not what a Python loop can fetch. Without the tarball it generates one
of the same size. The last line is one JSON object with every number; it is also written to
benchmarks/results/input-pipeline-<max_length>.json.
"""

import json
import os
import tempfile

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


def main(argv):
  """Prepares the data, measures the three pipelines, prints the numbers."""
  del argv
  workdir = tempfile.mkdtemp(prefix="input_pipeline_benchmark_")
  tarball = common.tarball_or_generated(FLAGS.data, workdir)
  data_dir = os.path.join(workdir, "prepared")
  results = {"data": os.path.abspath(tarball), **common.run_facts(),
             "prepare_seconds": round(common.prepare(tarball, data_dir), 2)}
  metadata = prepared_dataset.load_metadata(data_dir)
  files = prepared_dataset.split_files(data_dir, "train", metadata)
  batch, max_length = FLAGS.per_replica_batch_size, FLAGS.max_length
  epoch_batches = metadata["splits"]["train"]["examples"] // batch + 1
  pipelines = {
      "padded_batch": padded_batch_pipeline(files, batch, max_length),
      "bucket_by_sequence_length": bucket_by_sequence_length_pipeline(
          files, batch, max_length, FLAGS.bucket_width),
      "ours": input_pipeline.make_dataset(files, batch, training=True, max_length=max_length,
                                          input_cache="memory"),
      "ours_stream": input_pipeline.make_dataset(files, batch, training=True,
                                                 max_length=max_length, input_cache="stream"),
  }
  print(f"train split: {metadata['splits']['train']['examples']} reviews; batch {batch}, "
        f"max_length {max_length}; prepare took {results['prepare_seconds']} s")
  for name, dataset in pipelines.items():
    numbers = common.consume_in_graph(dataset, warmup_batches=epoch_batches,
                                      timed_batches=FLAGS.batches)
    print(f"{name:>26}: {numbers['examples_per_s']:>9,} examples/s, "
          f"{numbers['tokens_per_s']:>11,} tokens/s, "
          f"{numbers['padded_tokens_per_example']:>6} padded tokens/example, "
          f"padding ratio {numbers['padding_ratio']}")
    results.update({f"{name}_{key}": value for key, value in numbers.items()})
  for name in ("bucket_by_sequence_length", "padded_batch"):
    results[f"ours_vs_{name}"] = round(
        results["ours_examples_per_s"] / results[f"{name}_examples_per_s"], 2)
  results["ours_stream_vs_ours"] = round(
      results["ours_stream_examples_per_s"] / results["ours_examples_per_s"], 2)
  results.update(per_replica_batch_size=batch, max_length=max_length, batches=FLAGS.batches)
  common.write_result(f"input-pipeline-{max_length}.json", results)
  print(json.dumps(results))


if __name__ == "__main__":
  app.run(main)
