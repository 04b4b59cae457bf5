"""What the training tests share: a tiny config with dropout, and running it."""

import keras
import pytest
import tensorflow as tf

from trainer import config as config_lib
from trainer.modeling import model as model_lib
from trainer.training import train_lib

# Tiny, with the default preset's dropout: runs on different strategies compute the same thing.
TINY = config_lib.override(
    config_lib.get_preset("local"), vocab_size=40, global_batch_size=8, max_length=40, epochs=1.0,
    embedding_dropout=0.2, word_dropout=0.2, dropout=0.3,
    learning_rate=1e-2, warmup_steps=2, checkpoint_every_steps=4, log_every_steps=2,
    eval_batch_size=16, sort_window_batches=2)


def train(config, workdir, strategy=None, **run):
  """Runs train_and_evaluate with `config` and these fields of its run section."""
  return train_lib.train_and_evaluate(config_lib.override(config, **run), str(workdir), strategy)


@pytest.fixture(autouse=True)
def float32_policy():
  """Restores the float32 policy that a mixed-precision run changes."""
  yield
  keras.mixed_precision.set_global_policy("float32")


def checkpoint_weights(workdir, config=TINY):
  """The model weights of the latest checkpoint in <workdir>/checkpoints."""
  model = model_lib.build_model(config)
  tf.train.Checkpoint(model=model).restore(
      tf.train.latest_checkpoint(f"{workdir}/checkpoints")).expect_partial()
  return [weight.numpy() for weight in model.weights]
