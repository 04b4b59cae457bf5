r"""Input pipeline benchmark: ours vs `padded_batch` vs `bucket_by_sequence_length`, and prepare.

  python benchmarks/input_pipeline.py [--data=../shared/data/aclImdb_v1_labeled.tar.gz]
  python benchmarks/input_pipeline.py --data_dir=/tmp/imdb_prepared  # Already prepared.

Prepares the tarball with the real command (timed end to end, Python start-up included; not
with --data_dir), then reads the train split at the same batch size and max_length with each
pipeline (ours in memory and streaming), each cached in memory (ours: held, or streamed). Each
pipeline reads a warm-up epoch (its padding is counted there), then the pipelines are timed in
turn, `--seconds` each, in each of `--rounds` rounds (`common.time_in_alternating_rounds`):
the numbers are the medians over the rounds, the ratios those of the medians, and every round's
numbers are kept. The batches are read inside a tf.function, so what is measured is what the
pipeline delivers, not what a Python loop can fetch. Without the tarball it generates one of the
same size. The last line is one JSON object with every number; it is also written to
benchmarks/results/input-pipeline-<max_length>.json.
"""

import json
import os
import tempfile

from absl import app
from absl import flags
import tensorflow as tf

import common
from trainer.config import InputConfig
from trainer.data import input_pipeline
from trainer.data import prepared_dataset
from trainer.data import records

FLAGS = flags.FLAGS
common.define_data_flags()
flags.DEFINE_integer("per_replica_batch_size", 128, "Reviews per batch.")
flags.DEFINE_integer("max_length", 500, "Longest sequence kept (the last tokens).")
flags.DEFINE_integer("rounds", 5, "Timed rounds; each times every pipeline once, in turn.")
flags.DEFINE_float("seconds", 3.0, "Seconds each pipeline is timed in each round.")
flags.DEFINE_float("settle_seconds", 0.5, "Seconds each pipeline is read, untimed, before.")
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


def ratios(timing, baseline, name):
  """`name`: the ratio of the median examples/s; `name`_rounds: the ratio in each round."""
  return {name: round(timing["examples_per_s"] / baseline["examples_per_s"], 2),
          f"{name}_rounds": [round(ours / other, 2) for ours, other in zip(
              timing["examples_per_s_rounds"], baseline["examples_per_s_rounds"])]}


def main(argv):
  """Prepares the data (unless given), times the four pipelines in rounds, prints the numbers."""
  del argv
  results = common.run_facts()
  if FLAGS.data_dir:
    data_dir = results["data_dir"] = os.path.abspath(FLAGS.data_dir)
  else:
    workdir = tempfile.mkdtemp(prefix="input_pipeline_benchmark_")
    tarball = common.tarball_or_generated(FLAGS.data, workdir)
    data_dir = os.path.join(workdir, "prepared")
    results.update(data=os.path.abspath(tarball),
                   prepare_seconds=round(common.prepare(tarball, data_dir), 2))
  metadata = prepared_dataset.load_metadata(data_dir)
  files = prepared_dataset.split_files(data_dir, "train", metadata)
  batch, max_length = FLAGS.per_replica_batch_size, FLAGS.max_length
  pipelines = {
      "padded_batch": padded_batch_pipeline(files, batch, max_length),
      "bucket_by_sequence_length": bucket_by_sequence_length_pipeline(
          files, batch, max_length, FLAGS.bucket_width),
      "ours": input_pipeline.make_dataset(
          files, batch, InputConfig(max_length=max_length, input_cache="memory"), training=True),
      "ours_stream": input_pipeline.make_dataset(
          files, batch, InputConfig(max_length=max_length, input_cache="stream"), training=True),
  }
  print(f"train split: {metadata['splits']['train']['examples']} reviews; batch {batch}, "
        f"max_length {max_length}; prepare took {results.get('prepare_seconds', '-')} s")
  timings = common.time_in_alternating_rounds(
      pipelines, warmup_batches=metadata["splits"]["train"]["examples"] // batch + 1,
      rounds=FLAGS.rounds, seconds=FLAGS.seconds, settle_seconds=FLAGS.settle_seconds)
  for name, timing in timings.items():
    rounds = timing["examples_per_s_rounds"]
    print(f"{name:>26}: {timing['examples_per_s']:>9,} examples/s (median of "
          f"{min(rounds):,}-{max(rounds):,}), {timing['tokens_per_s']:>11,} tokens/s, "
          f"{timing['padded_tokens_per_example']:>6} padded tokens/example, "
          f"padding ratio {timing['padding_ratio']}")
    results.update({f"{name}_{key}": value for key, value in timing.items()})
  for pipeline, baseline in (("ours", "bucket_by_sequence_length"), ("ours", "padded_batch"),
                             ("ours_stream", "ours")):
    results.update(ratios(timings[pipeline], timings[baseline], f"{pipeline}_vs_{baseline}"))
  results.update(per_replica_batch_size=batch, max_length=max_length, rounds=FLAGS.rounds,
                 seconds_per_round=FLAGS.seconds, batches=timings["ours"]["timed_batches"],
                 load_average_at_end=[round(x, 2) for x in os.getloadavg()])
  common.write_result(f"input-pipeline-{max_length}.json", results)
  print(json.dumps(results))


if __name__ == "__main__":
  app.run(main)
