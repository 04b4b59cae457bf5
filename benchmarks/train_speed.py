r"""Training speed: our trainer vs the Keras example's way, same model and global batch, one run.

  python benchmarks/train_speed.py --preset=seed_notebook [--data=...aclImdb_v1_labeled.tar.gz]

Ours: the trainer's train step (strategy.run in a tf.function) fed by our length-bucketed
pipeline. Keras: `model.fit` on `pad_sequences` arrays padded to max_length, the way the keras-io
example trains. Both train the same `build_model(config)` from the same initial weights on the
training split; each is timed over --steps steps after --warmup_steps. The last line is JSON.
"""

import json
import tempfile
import time

from absl import app
from absl import flags
import keras
import numpy as np
import tensorflow as tf

import common
from trainer import config as config_lib
from trainer import distribution
from trainer import input_pipeline
from trainer import prepared_dataset
from trainer import records
from trainer import train

FLAGS = flags.FLAGS
flags.DEFINE_string("preset", "seed_notebook", "Preset whose model and global batch are timed.")
common.define_data_flags()
flags.DEFINE_integer("steps", 100, "Timed steps for each way.")
flags.DEFINE_integer("warmup_steps", 10, "Untimed steps first (tracing, caches).")


def ours_examples_per_s(config, files, total_steps):
  """Steady-state examples/s of our train step and input pipeline."""
  strategy = distribution.build_strategy("auto")
  keras.utils.set_random_seed(config.seed)
  model, optimizer = train.build_model_and_optimizer(strategy, config, total_steps, "float32")
  batch = config.global_batch_size // strategy.num_replicas_in_sync
  data = strategy.distribute_datasets_from_function(lambda context: input_pipeline.make_dataset(
      files, batch, training=True, max_length=config.max_length, keep=config.keep,
      input_context=context, sort_window_batches=config.sort_window_batches))
  step = train.build_train_step(strategy, model, optimizer, config, data.element_spec)
  iterator = iter(data)
  for _ in range(FLAGS.warmup_steps):
    step(next(iterator))
  start = time.perf_counter()
  for _ in range(FLAGS.steps):
    loss_sum, _ = step(next(iterator))
  float(loss_sum)  # Waits for the last step.
  return FLAGS.steps * config.global_batch_size / (time.perf_counter() - start)


class _StepTimes(keras.callbacks.Callback):
  """Records when each training batch ends."""

  def __init__(self):
    """Starts with no times."""
    super().__init__()
    self.times = []

  def on_train_batch_end(self, batch, logs=None):
    """Notes the time."""
    self.times.append(time.perf_counter())


def padded_training_arrays(files, config, count):
  """The first `count` training reviews as pad_sequences arrays, as the Keras example has them."""
  tokens, labels = [], []
  for serialized in tf.data.TFRecordDataset(files).batch(1024):
    batch_tokens, batch_labels = records.parse(serialized)
    tokens += batch_tokens.to_list()
    labels += batch_labels.numpy().tolist()
    if len(tokens) >= count:
      break
  truncating = "pre" if config.keep == "last" else "post"
  # Right-padded (padding="post"): the same masked model, eligible for cuDNN.
  padded = keras.utils.pad_sequences(tokens[:count], maxlen=config.max_length, padding="post",
                                     truncating=truncating)
  return padded.astype(np.int32), np.array(labels[:count], np.float32)


def keras_fit_examples_per_s(config, files):
  """Steady-state examples/s of `model.fit` on padded arrays."""
  steps = FLAGS.warmup_steps + FLAGS.steps
  x, y = padded_training_arrays(files, config, steps * config.global_batch_size)
  keras.utils.set_random_seed(config.seed)
  model, _ = train.build_model_and_optimizer(tf.distribute.get_strategy(), config, steps,
                                             "float32")
  model.compile(optimizer=keras.optimizers.Adam(config.learning_rate),
                loss=keras.losses.BinaryCrossentropy(from_logits=True), metrics=["accuracy"])
  times = _StepTimes()
  model.fit(x, y, batch_size=config.global_batch_size, epochs=1, shuffle=True, verbose=0,
            callbacks=[times])
  timed = times.times[FLAGS.warmup_steps - 1:]
  return (len(timed) - 1) * config.global_batch_size / (timed[-1] - timed[0])


def main(argv):
  """Times both ways and prints the numbers."""
  del argv
  workdir = tempfile.mkdtemp(prefix="train_speed_")
  data_dir = common.prepared_data_dir(workdir)
  metadata = prepared_dataset.load_metadata(data_dir)
  config = config_lib.get_preset(FLAGS.preset)
  files = prepared_dataset.split_files(data_dir, "train", metadata)
  ours = ours_examples_per_s(config, files, FLAGS.warmup_steps + FLAGS.steps)
  keras_fit = keras_fit_examples_per_s(config, files)
  print(f"{FLAGS.preset}: ours {ours:.1f} examples/s, keras fit {keras_fit:.1f} examples/s, "
        f"ratio {ours / keras_fit:.2f} (global batch {config.global_batch_size}, max_length "
        f"{config.max_length}, {FLAGS.steps} steps each)")
  print(json.dumps({"preset": FLAGS.preset, "ours_examples_per_s": round(ours, 1),
                    "keras_fit_examples_per_s": round(keras_fit, 1),
                    "ratio": round(ours / keras_fit, 3),
                    "global_batch_size": config.global_batch_size,
                    "max_length": config.max_length, "steps": FLAGS.steps}))


if __name__ == "__main__":
  app.run(main)
