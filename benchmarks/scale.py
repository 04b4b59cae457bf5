r"""Growth with the corpus: prepare and one epoch of the input pipeline at 1x, 4x and 16x IMDB.

  python benchmarks/scale.py [--data=../shared/data/aclImdb_v1_labeled.tar.gz] \
      [--scales=1,4,16] [--workdir=/tmp/scale_benchmark] [--baseline_revision=a480c56]

Each scale is the tarball's reviews repeated with new ids (copy c of review i becomes review
c * N + i of its folder; urls lines repeat, so the movies are the same), generated once into
--workdir. For each scale: `python -m trainer.prepare` end to end (wall time and peak RSS, the
process's VmHWM), then one epoch of the train split through the input pipeline in memory and
in streaming mode, each in a process of its own (examples/s, tokens/s, padding, peak RSS).
--baseline_revision's prepare (extracted with `git archive`, run with the same Python) is timed
at 1x in the same run, alternating with ours (--rounds_1x each; medians compared), and its
dataset compared with ours (same vocabulary and examples).
The last line is JSON; it is also written to benchmarks/results/scale.json.
"""

import io
import json
import os
import re
import statistics
import subprocess
import sys
import tarfile
import tempfile
import threading
import time

from absl import app
from absl import flags

import common

FLAGS = flags.FLAGS
common.define_tarball_flag()
flags.DEFINE_list("scales", ["1", "4", "16"], "Copies of the corpus to measure.")
flags.DEFINE_string("workdir", os.path.join(tempfile.gettempdir(), "scale_benchmark"),
                    "Where the scaled tarballs and the prepared datasets go (tarballs are kept).")
flags.DEFINE_string("baseline_revision", "a480c56", "Git revision whose prepare is the "
                    "baseline at 1x; empty to skip.")
flags.DEFINE_integer("per_replica_batch_size", 128, "Reviews per batch of the epoch.")
flags.DEFINE_integer("max_length", 500, "Longest sequence kept (the last tokens).")
flags.DEFINE_integer("rounds_1x", 3, "Timed runs of the baseline's and our prepare at 1x, "
                     "alternating; the medians are compared.")
flags.DEFINE_string("epoch_of", None, "Internal: measure one epoch of this prepared dataset.")
flags.DEFINE_enum("input_cache", "memory", ["memory", "stream"], "Internal: with --epoch_of.")

_REVIEW = re.compile(r"^aclImdb/(train|test)/(pos|neg)/(\d+)_(\d+)\.txt$")
_URLS = re.compile(r"^aclImdb/(train|test)/urls_(pos|neg)\.txt$")


def write_scaled_tarball(source, copies, path):
  """Writes `copies` copies of the aclImdb tarball `source` as one tarball at `path`."""
  if os.path.exists(path):
    return path
  folder_size = {}
  with tarfile.open(source, "r|*") as archive:
    for member in archive:
      match = _REVIEW.match(member.name)
      if match:
        key = match.group(1, 2)
        folder_size[key] = max(folder_size.get(key, 0), int(match.group(3)) + 1)
  partial = f"{path}.partial"
  with tarfile.open(partial, "w:gz", compresslevel=1) as output:
    for copy in range(copies):
      with tarfile.open(source, "r|*") as archive:
        for member in archive:
          review, urls = _REVIEW.match(member.name), _URLS.match(member.name)
          if not (review or urls) or (urls and copy):
            continue
          content = archive.extractfile(member).read()
          name = member.name
          if review:
            split, label, review_id, rating = review.groups()
            new_id = copy * folder_size[(split, label)] + int(review_id)
            name = f"aclImdb/{split}/{label}/{new_id}_{rating}.txt"
          else:
            lines = content.decode("utf-8").splitlines()
            content = ("\n".join(lines * copies) + "\n").encode("utf-8")
          info = tarfile.TarInfo(name)
          info.size = len(content)
          output.addfile(info, io.BytesIO(content))
  os.rename(partial, path)
  return path


def run_measured(command, cwd=common.REPOSITORY, env=None):
  """Runs a command; returns (wall seconds, peak RSS in MB of that process, stdout).

  The peak is the process's own VmHWM, read every 50 ms until it ends (the rusage of a child
  would count the pages it shared with this process between fork and exec).
  """
  start = time.perf_counter()
  process = subprocess.Popen(command, cwd=cwd, env=env, stdout=subprocess.PIPE)
  peak_kb = [0]

  def watch():
    """Keeps the last VmHWM of the process (it only grows)."""
    while process.poll() is None:
      try:
        with open(f"/proc/{process.pid}/status") as f:
          for line in f:
            if line.startswith("VmHWM:"):
              peak_kb[0] = max(peak_kb[0], int(line.split()[1]))
      except OSError:  # Ended between poll() and open().
        pass
      time.sleep(0.05)

  watcher = threading.Thread(target=watch)
  watcher.start()
  stdout = process.stdout.read()
  process.wait()
  watcher.join()
  if process.returncode:
    raise RuntimeError(f"{command} failed with exit code {process.returncode}")
  return time.perf_counter() - start, peak_kb[0] / 1024, stdout.decode()


def median_run(runs):
  """(median seconds, highest peak MB) of (seconds, peak MB) runs."""
  return statistics.median(seconds for seconds, _ in runs), max(rss for _, rss in runs)


def prepare_command(tarball, output_dir):
  """The prepare command line."""
  return [sys.executable, "-m", "trainer.prepare", f"--input={tarball}",
          f"--output_dir={output_dir}", "--overwrite"]


def baseline_checkout(revision, workdir):
  """The files of `revision`, extracted with `git archive` (the work tree is not touched)."""
  folder = os.path.join(workdir, f"baseline-{revision}")
  if not os.path.exists(folder):
    os.makedirs(folder)
    archive = subprocess.run(["git", "archive", revision], cwd=common.REPOSITORY, check=True,
                             capture_output=True).stdout
    with tarfile.open(fileobj=io.BytesIO(archive)) as files:
      files.extractall(folder, filter="data")
  return folder


def same_dataset(first, second):
  """Whether two prepared datasets hold the same vocabulary and the same reviews per split.

  Reviews are compared by their fields (name, tokens, label, rating): the bytes of a
  tf.train.Example depend on the order its features were written in.
  """
  import tensorflow as tf  # pylint: disable=g-import-not-at-top  (only the parent compares)
  from trainer.data import prepared_dataset  # pylint: disable=g-import-not-at-top

  def fields(serialized):
    """(name, tokens, label, rating) of a serialized review."""
    feature = tf.train.Example.FromString(serialized).features.feature
    return (feature["name"].bytes_list.value[0], tuple(feature["tokens"].int64_list.value),
            feature["label"].int64_list.value[0], feature["rating"].int64_list.value[0])

  def content(data_dir):
    """(vocab.txt, {split: sorted reviews})."""
    with open(os.path.join(data_dir, "vocab.txt"), "rb") as f:
      vocabulary = f.read()
    return vocabulary, {split: sorted(map(fields, tf.data.TFRecordDataset(
        prepared_dataset.split_files(data_dir, split)).as_numpy_iterator()))
                        for split in prepared_dataset.SPLITS}

  return content(first) == content(second)


def measure_epoch(data_dir, input_cache):
  """One epoch of the train split through the input pipeline, read in the graph; a dict.

  Timed from the start, so the memory mode's loading and the stream's counting are included.
  """
  from trainer.config import InputConfig  # pylint: disable=g-import-not-at-top
  from trainer.data import input_pipeline  # pylint: disable=g-import-not-at-top
  from trainer.data import prepared_dataset  # pylint: disable=g-import-not-at-top
  metadata = prepared_dataset.load_metadata(data_dir)
  batches = metadata["splits"]["train"]["examples"] // FLAGS.per_replica_batch_size
  dataset = input_pipeline.make_dataset(
      prepared_dataset.split_files(data_dir, "train", metadata), FLAGS.per_replica_batch_size,
      InputConfig(max_length=FLAGS.max_length, input_cache=input_cache), training=True)
  return common.consume_in_graph(dataset, warmup_batches=0, timed_batches=batches)


def main(argv):
  """Measures every scale, prints the numbers and the JSON summary."""
  del argv
  if FLAGS.epoch_of:
    print(json.dumps(measure_epoch(FLAGS.epoch_of, FLAGS.input_cache)))
    return
  os.makedirs(FLAGS.workdir, exist_ok=True)
  source = common.tarball_or_generated(FLAGS.data, FLAGS.workdir)
  results = {"data": os.path.abspath(source), "per_replica_batch_size":
             FLAGS.per_replica_batch_size, "max_length": FLAGS.max_length,
             **common.run_facts()}
  ours_1x = []  # (seconds, peak MB) of our prepare at 1x, timed beside the baseline's.
  if FLAGS.baseline_revision:
    baseline = baseline_checkout(FLAGS.baseline_revision, FLAGS.workdir)
    env = {**os.environ, "PYTHONPATH": baseline}
    baseline_1x = []
    for _ in range(FLAGS.rounds_1x):
      baseline_1x.append(run_measured(prepare_command(
          source, os.path.join(FLAGS.workdir, "baseline-1x")), cwd=baseline, env=env)[:2])
      ours_1x.append(run_measured(prepare_command(
          source, os.path.join(FLAGS.workdir, "prepared-1x")))[:2])
      print(f"prepare 1x: baseline {FLAGS.baseline_revision} {baseline_1x[-1][0]:.1f} s, ours "
            f"{ours_1x[-1][0]:.1f} s")
    seconds, rss = median_run(baseline_1x)
    results.update(baseline_revision=FLAGS.baseline_revision,
                   baseline_prepare_seconds_1x=round(seconds, 2),
                   baseline_prepare_peak_rss_mb_1x=round(rss),
                   prepare_seconds_1x_rounds={
                       "baseline": [round(run[0], 2) for run in baseline_1x],
                       "ours": [round(run[0], 2) for run in ours_1x]})
  for key in ("prepare_seconds", "prepare_peak_rss_mb", "prepare_reviews_per_s", "reviews",
              "pipeline_examples_per_s_memory", "pipeline_examples_per_s_stream",
              "pipeline_tokens_per_s_memory", "pipeline_tokens_per_s_stream",
              "pipeline_peak_rss_mb_memory", "pipeline_peak_rss_mb_stream",
              "padding_ratio_memory", "padding_ratio_stream"):
    results[key] = {}
  for scale in FLAGS.scales:
    label = f"{scale}x"
    tarball = source if scale == "1" else write_scaled_tarball(
        source, int(scale), os.path.join(FLAGS.workdir, f"aclImdb-{label}.tar.gz"))
    data_dir = os.path.join(FLAGS.workdir, f"prepared-{label}")
    if label == "1x" and ours_1x:
      seconds, rss = median_run(ours_1x)
    else:
      seconds, rss, _ = run_measured(prepare_command(tarball, data_dir))
    with open(os.path.join(data_dir, "metadata.json")) as f:
      reviews = sum(s["examples"] + s["dropped_empty"]["count"]
                    for s in json.load(f)["splits"].values())
    results["prepare_seconds"][label] = round(seconds, 2)
    results["prepare_peak_rss_mb"][label] = round(rss)
    results["prepare_reviews_per_s"][label] = round(reviews / seconds)
    results["reviews"][label] = reviews
    print(f"{label}: prepare {reviews:,} reviews in {seconds:.1f} s ({reviews / seconds:,.0f} "
          f"reviews/s), peak RSS {rss:.0f} MB")
    for mode in ("memory", "stream"):
      _, rss, stdout = run_measured([sys.executable, os.path.abspath(__file__),
                                     f"--epoch_of={data_dir}", f"--input_cache={mode}",
                                     f"--per_replica_batch_size={FLAGS.per_replica_batch_size}",
                                     f"--max_length={FLAGS.max_length}"])
      epoch = json.loads(stdout.strip().splitlines()[-1])
      results[f"pipeline_examples_per_s_{mode}"][label] = epoch["examples_per_s"]
      results[f"pipeline_tokens_per_s_{mode}"][label] = epoch["tokens_per_s"]
      results[f"pipeline_peak_rss_mb_{mode}"][label] = round(rss)
      results[f"padding_ratio_{mode}"][label] = epoch["padding_ratio"]
      print(f"{label}: one epoch, {mode}: {epoch['examples_per_s']:,} examples/s, "
            f"{epoch['tokens_per_s']:,} tokens/s, padding {epoch['padding_ratio']}, peak RSS "
            f"{rss:.0f} MB ({epoch['seconds']} s)")
  first, last = f"{FLAGS.scales[0]}x", f"{FLAGS.scales[-1]}x"
  per_review = {label: seconds / results["reviews"][label]
                for label, seconds in results["prepare_seconds"].items()}
  results["growth"] = {
      "time_per_review_ratio": round(per_review[last] / per_review[first], 3),
      "peak_rss_ratio": round(results["prepare_peak_rss_mb"][last] /
                              results["prepare_peak_rss_mb"][first], 3),
      "reviews_ratio": round(results["reviews"][last] / results["reviews"][first], 3)}
  if FLAGS.baseline_revision and "1x" in results["prepare_seconds"]:
    results["growth"]["prepare_1x_vs_baseline"] = round(
        results["prepare_seconds"]["1x"] / results["baseline_prepare_seconds_1x"], 3)
  if FLAGS.baseline_revision and "1" in FLAGS.scales:  # Last: it grows this process.
    results["same_dataset_as_baseline_1x"] = same_dataset(
        os.path.join(FLAGS.workdir, "prepared-1x"), os.path.join(FLAGS.workdir, "baseline-1x"))
    print(f"same vocabulary and reviews as {FLAGS.baseline_revision} at 1x: "
          f"{results['same_dataset_as_baseline_1x']}")
  results["stream_padding_ratio"] = results["padding_ratio_stream"][last]
  results["stream_vs_memory_examples_per_s"] = round(
      results["pipeline_examples_per_s_stream"][last] /
      results["pipeline_examples_per_s_memory"][last], 3)
  print(f"growth {first} -> {last}: {results['growth']}")
  common.write_result("scale.json", results)
  print(json.dumps(results))


if __name__ == "__main__":
  app.run(main)
