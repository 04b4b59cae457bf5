r"""Training speed: our trainer vs the Keras example's way, same model and global batch, one run.

  python benchmarks/train_speed.py --preset=seed_notebook [--data=...aclImdb_v1_labeled.tar.gz]

Ours: the trainer's train step (strategy.run in a tf.function) fed by our length-bucketed
pipeline. Keras: `model.fit` on `pad_sequences` arrays of all training reviews padded to
max_length and shuffled, the way the keras-io example trains. Both train the same
`build_model(config)` from the same initial weights on the training split; after
--untimed_steps each, they are timed in --rounds alternating rounds of --steps steps (the machine's
speed drifts; alternating shows both the same drift); `ratio` is the median of the per-round
ratios. Any config flag of `trainer.train` changes the preset. The last line is JSON.
"""

import json
import statistics
import tempfile
import time

from absl import app
from absl import flags
import keras
import numpy as np
import tensorflow as tf

import common
from trainer import cli
from trainer.cluster import strategy as strategy_lib
from trainer.data import input_pipeline
from trainer.data import prepared_dataset
from trainer.data import records
from trainer.training import optimization
from trainer.training import steps as steps_lib

FLAGS = flags.FLAGS
cli.define_config_flags()
common.define_tarball_flag()
flags.DEFINE_integer("steps", 100, "Timed steps per round for each way.")
flags.DEFINE_integer("rounds", 5, "Alternating rounds; medians are reported.")
flags.DEFINE_integer("untimed_steps", 10, "Untimed steps first (tracing, caches).")


class OursRunner:
  """Our train step fed by our bucketed pipeline, built once and timed in rounds."""

  def __init__(self, config, files, total_steps):
    """Builds the model, optimizer, step and data iterator, and warms them up."""
    strategy = strategy_lib.build_strategy("auto")
    keras.utils.set_random_seed(config.training.seed)
    model, optimizer = optimization.build_model_and_optimizer(strategy, config, total_steps, "float32")
    batch = config.training.global_batch_size // strategy.num_replicas_in_sync
    data = strategy.distribute_datasets_from_function(lambda context: input_pipeline.make_dataset(
        files, batch, config.input, training=True, input_context=context))
    self.global_batch_size = config.training.global_batch_size
    self.step = steps_lib.build_train_step(strategy, model, optimizer, config.training,
                                           data.element_spec)
    self.iterator = iter(data)
    self.steps_done = 0
    self.measure(FLAGS.untimed_steps)

  def measure(self, steps):
    """Examples/s over the next `steps` steps."""
    start = time.perf_counter()
    for _ in range(steps):
      self.steps_done += 1
      loss_sum, _ = self.step(next(self.iterator), self.steps_done)
    float(loss_sum)  # Waits for the last step.
    return steps * self.global_batch_size / (time.perf_counter() - start)


class _StepTimes(keras.callbacks.Callback):
  """Records when each training batch ends."""

  def __init__(self):
    """Starts with no times."""
    super().__init__()
    self.times = []

  def on_train_batch_end(self, batch, logs=None):
    """Notes the time."""
    self.times.append(time.perf_counter())


def padded_training_arrays(files, config):
  """All training reviews as pad_sequences arrays, as the Keras example has them."""
  tokens, labels = [], []
  for serialized in tf.data.TFRecordDataset(files).batch(1024):
    batch_tokens, batch_labels = records.parse(serialized)
    tokens += batch_tokens.to_list()
    labels += batch_labels.numpy().tolist()
  truncating = "pre" if config.input.keep == "last" else "post"
  # Right-padded (padding="post"): the same masked model, eligible for cuDNN.
  padded = keras.utils.pad_sequences(tokens, maxlen=config.input.max_length, padding="post",
                                     truncating=truncating)
  return padded.astype(np.int32), np.array(labels, np.float32)


class KerasFitRunner:
  """`model.fit` on padded arrays, the keras-io way, built once and timed in rounds."""

  def __init__(self, config, files):
    """Builds and compiles the same model, pads the arrays, and warms up."""
    self.global_batch_size = config.training.global_batch_size
    self.x, self.y = padded_training_arrays(files, config)
    keras.utils.set_random_seed(config.training.seed)
    self.model, _ = optimization.build_model_and_optimizer(tf.distribute.get_strategy(), config,
                                                    FLAGS.rounds * FLAGS.steps, "float32")
    self.model.compile(optimizer=keras.optimizers.Adam(config.training.learning_rate),
                       loss=keras.losses.BinaryCrossentropy(from_logits=True),
                       metrics=["accuracy"])
    self.measure(FLAGS.untimed_steps)

  def measure(self, steps):
    """Examples/s over `steps` batches of one `fit` call on the whole shuffled training set
    (timed from the first batch's end)."""
    times = _StepTimes()
    self.model.fit(self.x, self.y, batch_size=self.global_batch_size, epochs=1,
                   steps_per_epoch=steps + 1, shuffle=True, verbose=0, callbacks=[times])
    return steps * self.global_batch_size / (times.times[-1] - times.times[0])


def main(argv):
  """Times both ways and prints the numbers."""
  del argv
  workdir = tempfile.mkdtemp(prefix="train_speed_")
  data_dir = common.prepared_data_dir(workdir)
  metadata = prepared_dataset.load_metadata(data_dir)
  config = cli.config_from_flags()
  files = prepared_dataset.split_files(data_dir, "train", metadata)
  ours_runner = OursRunner(config, files, FLAGS.untimed_steps + FLAGS.rounds * FLAGS.steps)
  keras_runner = KerasFitRunner(config, files)
  ours_rounds, keras_rounds = [], []
  for _ in range(FLAGS.rounds):  # Alternating, so that both see the same machine state.
    ours_rounds.append(ours_runner.measure(FLAGS.steps))
    keras_rounds.append(keras_runner.measure(FLAGS.steps))
  ours, keras_fit = statistics.median(ours_rounds), statistics.median(keras_rounds)
  # The machine's speed drifts between rounds: compare each round's pair, then take the median.
  ratio = statistics.median(o / k for o, k in zip(ours_rounds, keras_rounds))
  print(f"{FLAGS.preset}: ours {ours:.1f} examples/s, keras fit {keras_fit:.1f} examples/s, "
        f"ratio {ratio:.2f} (global batch {config.training.global_batch_size}, max_length "
        f"{config.input.max_length}, median of {FLAGS.rounds} alternating rounds of {FLAGS.steps} steps; "
        f"ours {[round(r, 1) for r in ours_rounds]}, keras {[round(r, 1) for r in keras_rounds]})")
  print(json.dumps({"preset": FLAGS.preset, "ours_examples_per_s": round(ours, 1),
                    "keras_fit_examples_per_s": round(keras_fit, 1),
                    "ratio": round(ratio, 3),
                    "global_batch_size": config.training.global_batch_size,
                    "max_length": config.input.max_length, "steps": FLAGS.steps,
                    "rounds": FLAGS.rounds}))


if __name__ == "__main__":
  app.run(main)
