"""What the benchmarks share: where the real data is, and a prepared copy of it."""

import datetime
import os
import platform
import statistics
import subprocess
import sys
import time

from absl import flags

REPOSITORY = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPOSITORY)  # The trainer package, run from a checkout.
from trainer import storage  # pylint: disable=g-import-not-at-top,wrong-import-position
from trainer.testing import synthetic_imdb  # pylint: disable=g-import-not-at-top,wrong-import-position
DEFAULT_DATA = os.path.normpath(
    os.path.join(REPOSITORY, "..", "shared", "data", "aclImdb_v1_labeled.tar.gz"))


def tarball_or_generated(tarball, workdir):
  """`tarball` when it exists, else a generated one of IMDB's size (and says so)."""
  if os.path.exists(tarball):
    return tarball
  print(f"{tarball} not found: generating 50,000 reviews instead.")
  os.makedirs(workdir, exist_ok=True)
  return synthetic_imdb.write_tarball(
      synthetic_imdb.generate(reviews_per_folder=12500, reviews_per_movie=8, median_words=200),
      os.path.join(workdir, "generated_aclImdb.tar.gz"))


def define_tarball_flag():
  """--data, the tarball that `prepared_data_dir` prepares when --data_dir is not given."""
  flags.DEFINE_string("data", DEFAULT_DATA, "aclImdb tarball; generated when missing.")


def define_data_flags():
  """--data (a tarball) and --data_dir (a prepared dataset), for benchmarks without config flags."""
  define_tarball_flag()
  flags.DEFINE_string("data_dir", None, "An already prepared dataset (skips --data).")


def prepared_data_dir(workdir):
  """--data_dir, or --data prepared into <workdir>/data."""
  if flags.FLAGS.data_dir:
    return flags.FLAGS.data_dir
  data_dir = os.path.join(workdir, "data")
  prepare(tarball_or_generated(flags.FLAGS.data, workdir), data_dir)
  return data_dir


def prepare(tarball, output_dir):
  """Runs `python -m trainer.prepare` on the tarball; returns its wall time in seconds."""
  start = time.perf_counter()
  subprocess.run([sys.executable, "-m", "trainer.prepare", f"--input={tarball}",
                  f"--output_dir={output_dir}"], check=True, cwd=REPOSITORY)
  return time.perf_counter() - start


def write_result(name, summary):
  """Writes a benchmark's summary to benchmarks/results/<name>, the file the docs cite."""
  folder = os.path.join(REPOSITORY, "benchmarks", "results")
  os.makedirs(folder, exist_ok=True)
  storage.write_json_atomically(os.path.join(folder, name), summary)


def run_facts():
  """When, where and on which code a benchmark ran: UTC date, machine, git revision, load."""
  revision = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=REPOSITORY,
                            capture_output=True, text=True, check=False).stdout.strip()
  dirty = subprocess.run(  # The results folder aside: benchmarks write there.
      ["git", "status", "--porcelain", "--untracked-files=no", "--", ".",
       ":(exclude)benchmarks/results"],
      cwd=REPOSITORY, capture_output=True, text=True, check=False).stdout
  return {"date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
          "machine": f"{platform.node()} {platform.machine()} {os.cpu_count()} cores, "
                     f"{os.sysconf('SC_PAGE_SIZE') * os.sysconf('SC_PHYS_PAGES') / 2**30:.0f} GiB",
          "cores": os.cpu_count(),
          "git_revision": revision + ("+uncommitted changes" if dirty else ""),
          "load_average_at_start": [round(x, 2) for x in os.getloadavg()]}


def consume_in_graph(dataset, warmup_batches, timed_batches):
  """Reads batches of (tokens, labels) inside a tf.function; what the pipeline delivers.

  The clock starts when batch `warmup_batches - 1` arrives (at the start with no warm-up) and
  stops after batch `warmup_batches + timed_batches - 1`; both are read in the graph, so no
  Python loop limits the rate.

  Returns:
    Dict: seconds, examples_per_s, tokens_per_s (true tokens), padded_tokens_per_example,
    padding_ratio (padded / true tokens), over the timed batches.
  """
  import tensorflow as tf  # pylint: disable=g-import-not-at-top  (not needed by every benchmark)

  @tf.function
  def read():
    """(start time, end time, examples, padded tokens, true tokens)."""
    def add(state, batch):
      """Adds a batch that is timed; notes the clock at the last warm-up batch."""
      index, start, examples, padded, true = state
      tokens, labels = batch
      start = tf.where(index == warmup_batches - 1, tf.timestamp(), start)
      timed = tf.cast(index >= warmup_batches, tf.int64)
      return (index + 1, start, examples + timed * tf.size(labels, tf.int64),
              padded + timed * tf.size(tokens, tf.int64),
              true + timed * tf.math.count_nonzero(tokens, dtype=tf.int64))
    initial = (tf.constant(0, tf.int64), tf.timestamp(), tf.constant(0, tf.int64),
               tf.constant(0, tf.int64), tf.constant(0, tf.int64))
    _, start, examples, padded, true = dataset.take(warmup_batches + timed_batches).reduce(
        initial, add)
    return start, tf.timestamp(), examples, padded, true

  start, end, examples, padded, true = (x.numpy() for x in read())
  seconds = float(end - start)
  return {"seconds": round(seconds, 3), "examples_per_s": round(examples / seconds),
          "tokens_per_s": round(true / seconds),
          "padded_tokens_per_example": round(padded / examples, 1),
          "padding_ratio": round(padded / true, 4)}


def time_in_alternating_rounds(datasets, *, warmup_batches, rounds, seconds, settle_seconds):
  """Reads each dataset of (tokens, labels) in turn, in each of several timed rounds.

  Each dataset gets one iterator, kept over all rounds: its warm-up batches are read first
  (untimed; its padding is counted over them), then in each round it is read for
  `settle_seconds` (untimed: what its buffers held is used up) and timed for `seconds`. The
  order of the datasets shifts by one each round. Reading happens inside a tf.function and only
  takes each batch's shape, so what is timed is the rate at which the pipeline delivers batches.

  Args:
    datasets: dict name -> dataset.
    warmup_batches, rounds, seconds, settle_seconds: as said above.

  Returns:
    Dict name -> {"examples_per_s_rounds": one per round, "examples_per_s": their median,
    "tokens_per_s" (true tokens: the median times the true tokens per example of the warm-up
    batches), "padded_tokens_per_example", "padding_ratio" (of the warm-up batches),
    "timed_batches" and "seconds" (over all rounds)}.
  """
  import tensorflow as tf  # pylint: disable=g-import-not-at-top  (not needed by every benchmark)
  count, read = tf.function(_count_tokens), tf.function(_read_for)
  iterators = {name: iter(dataset) for name, dataset in datasets.items()}
  padding = {name: _padding(*count(iterator, tf.constant(warmup_batches)))
             for name, iterator in iterators.items()}
  timed = {name: [] for name in datasets}
  names = list(datasets)
  for round_index in range(rounds):
    shift = round_index % len(names)
    for name in names[shift:] + names[:shift]:
      read(iterators[name], tf.constant(settle_seconds, tf.float64))
      timed[name].append(tuple(x.numpy() for x in read(iterators[name],
                                                       tf.constant(seconds, tf.float64))))
  results = {}
  for name in names:
    examples_per_s = [examples / elapsed for _, examples, elapsed in timed[name]]
    median = statistics.median(examples_per_s)
    true_per_example = padding[name].pop("true_tokens_per_example")
    results[name] = {
        "examples_per_s": round(median), "tokens_per_s": round(median * true_per_example),
        **padding[name], "examples_per_s_rounds": [round(rate) for rate in examples_per_s],
        "timed_batches": int(sum(batches for batches, _, _ in timed[name])),
        "seconds": round(float(sum(elapsed for _, _, elapsed in timed[name])), 3)}
  return results


def _padding(examples, padded, true):
  """padded_tokens_per_example, padding_ratio and true_tokens_per_example of counted batches."""
  examples, padded, true = examples.numpy(), padded.numpy(), true.numpy()
  return {"padded_tokens_per_example": round(padded / examples, 1),
          "padding_ratio": round(padded / true, 4), "true_tokens_per_example": true / examples}


def _count_tokens(iterator, batches):
  """Reads `batches` batches (to run in a tf.function): examples, padded and true tokens."""
  import tensorflow as tf  # pylint: disable=g-import-not-at-top

  examples, padded, true = (tf.constant(0, tf.int64),) * 3
  for _ in tf.range(batches):
    tokens, labels = next(iterator)
    examples += tf.size(labels, tf.int64)
    padded += tf.size(tokens, tf.int64)
    true += tf.math.count_nonzero(tokens, dtype=tf.int64)
  return examples, padded, true


def _read_for(iterator, seconds):
  """Reads batches for `seconds` (to run in a tf.function): batches, examples, elapsed seconds."""
  import tensorflow as tf  # pylint: disable=g-import-not-at-top

  start = now = tf.timestamp()
  batches, examples = tf.constant(0, tf.int64), tf.constant(0, tf.int64)
  while now - start < seconds:
    _, labels = next(iterator)
    batches += 1
    examples += tf.size(labels, tf.int64)
    now = tf.timestamp()
  return batches, examples, now - start
