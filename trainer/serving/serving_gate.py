r"""The serving gate: does an export load in a fresh process, answer, and answer fast enough?

  python -m trainer.serving.serving_gate <export dir>

In its own process (nothing cached from training), it loads the SavedModel, replays the export's
TF Serving warm-up requests (`serving.warmup`), then times `serving_default` on this machine:
one review at a time (latency p50 and p99 in ms) and batches of 64 (reviews per second).
Both use the 54-word review of the warm-up requests. It prints one JSON line; `measure()` runs it
and reads that line.
"""

import json
import subprocess
import sys
import time

import numpy as np
import tensorflow as tf

from trainer.errors import first_line
from trainer.serving import export
from trainer.serving import warmup

LATENCY_CALLS = 200
THROUGHPUT_BATCHES = 20
_TIMEOUT_SECONDS = 600


def _time_calls(serve, reviews, calls):
  """Seconds of each of `calls` calls of `serve` on `reviews`."""
  batch = tf.constant(reviews, tf.string)
  seconds = []
  for _ in range(calls):
    start = time.perf_counter()
    serve(reviews=batch)["label"].numpy()
    seconds.append(time.perf_counter() - start)
  return np.array(seconds)


def _measure_here(export_dir):
  """Loads, warms up and times the export in this process; returns the report."""
  start = time.perf_counter()
  loaded = tf.saved_model.load(export_dir)
  requests = warmup.read(export_dir)
  for signature, reviews in requests:
    outputs = loaded.signatures[signature](reviews=tf.constant(reviews, tf.string))
    if outputs["label"].shape[0] != len(reviews):
      raise ValueError(f"{signature} answered {outputs['label'].shape[0]} labels for "
                       f"{len(reviews)} reviews.")
  ready_seconds = time.perf_counter() - start
  serve = loaded.signatures[export.SIGNATURE]
  latency_ms = 1000 * _time_calls(serve, [warmup.TYPICAL_REVIEW], LATENCY_CALLS)
  batch = [warmup.TYPICAL_REVIEW] * warmup.BATCH
  batch_seconds = _time_calls(serve, batch, THROUGHPUT_BATCHES)
  return {"loaded": True, "error": None, "warmup_requests": len(requests),
          "ready_seconds": round(ready_seconds, 3),
          "latency_ms_p50": round(float(np.percentile(latency_ms, 50)), 3),
          "latency_ms_p99": round(float(np.percentile(latency_ms, 99)), 3),
          "batch_size": len(batch),
          "reviews_per_s": round(len(batch) * THROUGHPUT_BATCHES / float(batch_seconds.sum()), 1)}


def _failure(error):
  """The report of an export that could not be served."""
  return {"loaded": False, "error": error}


def measure(export_dir, timeout_seconds=_TIMEOUT_SECONDS):
  """Runs the gate on a local export in a fresh process; returns its report (a dict)."""
  try:
    completed = subprocess.run([sys.executable, "-m", "trainer.serving.serving_gate", export_dir],
                               capture_output=True, text=True, timeout=timeout_seconds,
                               check=False)
  except subprocess.TimeoutExpired:
    return _failure(f"not served within {timeout_seconds} s")
  lines = completed.stdout.strip().splitlines()
  if completed.returncode != 0 or not lines:
    last = (completed.stderr.strip().splitlines() or [f"exit code {completed.returncode}"])[-1]
    return _failure(f"the serving process failed: {last}")
  return json.loads(lines[-1])


def main(argv):
  """Prints the report of the export named on the command line as one JSON line."""
  if len(argv) != 2:
    sys.exit("usage: python -m trainer.serving.serving_gate <export dir>")
  try:
    report = _measure_here(argv[1])
  except Exception as e:  # pylint: disable=broad-except  (any failure to serve is the answer)
    report = _failure(f"{type(e).__name__}: {first_line(e)}")
  print(json.dumps(report), flush=True)


if __name__ == "__main__":
  main(sys.argv)
