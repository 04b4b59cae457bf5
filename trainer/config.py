"""Hyperparameters: one frozen dataclass and its named presets."""

import dataclasses

from trainer.input_pipeline import KEEP_CHOICES

RNN_CHOICES = ("lstm", "gru")
POOLING_CHOICES = ("last", "max_mean")
OPTIMIZER_CHOICES = ("adam", "adamw")
SCHEDULE_CHOICES = ("constant", "cosine")
DENSE_GRADIENT_CHOICES = ("auto", "always", "never")


@dataclasses.dataclass(frozen=True)
class Config:
  """Everything that shapes a training run's result; `PRESETS` names useful combinations."""
  # Data.
  vocab_size: int = 10000  # Ids used, at most the dataset's; rarer words become <unk>.
  max_length: int = 1000  # Tokens kept per review; longer reviews are truncated.
  keep: str = "last"  # Which end of a long review is kept: "last" (as keras-io) or "first".
  sort_window_batches: int = 64  # Batches sorted by length together (length bucketing).
  # Model.
  embedding_dim: int = 128  # Width of the word embedding.
  rnn: str = "lstm"  # Recurrent cell: "lstm" or "gru" (fewer parameters, often as accurate).
  rnn_units: tuple[int, ...] = (64,)  # Units per direction of each bidirectional layer.
  pooling: str = "max_mean"  # "last": final states; "max_mean": masked max and mean over time.
  embedding_dropout: float = 0.2  # Dropout of whole embedding channels (SpatialDropout1D).
  word_dropout: float = 0.2  # Dropout of whole words: their embedding is zeroed.
  dropout: float = 0.3  # Dropout before the output layer.
  # Optimization.
  global_batch_size: int = 32  # Reviews per step over all replicas; divides evenly among them.
  epochs: float = 3.0  # Passes over the training split (fractions allowed).
  optimizer: str = "adamw"  # "adam" or "adamw".
  learning_rate: float = 2e-3  # Peak learning rate.
  schedule: str = "cosine"  # "constant", or "cosine" decay to 0 after the warm-up.
  warmup_steps: int = 200  # Linear warm-up to the peak learning rate over this many steps.
  weight_decay: float = 1e-4  # Decoupled weight decay (adamw only).
  clip_norm: float = 1.0  # Clip the gradient to this global norm; 0 disables.
  dense_gradients: str = "auto"  # All-reduce the embedding gradient dense: auto = batch >= 100.
  ema_momentum: float = 0.999  # Evaluate a moving average of the weights (momentum); 0 = off.
  # Evaluation and bookkeeping.
  eval_batch_size: int = 256  # Reviews per evaluation batch per replica.
  eval_every_steps: int = 0  # Validation every this many steps; 0 = once per epoch.
  checkpoint_every_steps: int = 500  # Checkpoint every this many steps (and at the end).
  keep_checkpoints: int = 3  # Checkpoints kept.
  log_every_steps: int = 50  # Log line and summaries every this many steps.
  seed: int = 0  # Seeds weights, dropout and the data order.

  def check(self):
    """Raises ValueError naming the first field whose value cannot work."""
    choices = {"rnn": RNN_CHOICES, "pooling": POOLING_CHOICES, "optimizer": OPTIMIZER_CHOICES,
               "schedule": SCHEDULE_CHOICES, "dense_gradients": DENSE_GRADIENT_CHOICES,
               "keep": KEEP_CHOICES}
    for name, allowed in choices.items():
      if getattr(self, name) not in allowed:
        raise ValueError(f"{name}={getattr(self, name)!r}: choose one of {allowed}.")
    positive = ("vocab_size", "max_length", "sort_window_batches", "embedding_dim",
                "global_batch_size", "epochs", "learning_rate", "eval_batch_size",
                "checkpoint_every_steps", "keep_checkpoints", "log_every_steps")
    for name in positive:
      if getattr(self, name) <= 0:
        raise ValueError(f"{name}={getattr(self, name)}: it must be positive.")
    if not self.rnn_units or min(self.rnn_units) <= 0:
      raise ValueError(f"rnn_units={self.rnn_units}: give one positive width per layer.")
    for name in ("dropout", "embedding_dropout", "word_dropout", "ema_momentum"):
      if not 0 <= getattr(self, name) < 1:
        raise ValueError(f"{name}={getattr(self, name)}: use a value in [0, 1).")
    for name in ("warmup_steps", "weight_decay", "clip_norm", "eval_every_steps"):
      if getattr(self, name) < 0:
        raise ValueError(f"{name}={getattr(self, name)}: it cannot be negative.")


PRESETS = {
    # Our best configuration for IMDB on a small budget (see README: accuracy benchmark).
    "default": Config(),
    # keras-io "Bidirectional LSTM on IMDB": 20k words, last 200 tokens, Embedding 128,
    # two BiLSTM(64), Adam 1e-3, batch 32, 2 epochs.
    "keras_example": Config(
        vocab_size=20000, max_length=200, embedding_dim=128, rnn_units=(64, 64), pooling="last",
        embedding_dropout=0.0, word_dropout=0.0, dropout=0.0, global_batch_size=32, epochs=2,
        optimizer="adam", learning_rate=1e-3, schedule="constant", warmup_steps=0,
        weight_decay=0.0, clip_norm=0.0, ema_momentum=0.0),
    # The classic course notebook: 5k words, 500 tokens, Embedding 50, one BiLSTM(128),
    # Dropout 0.5, Adam, batch 128, 3 epochs.
    "seed_notebook": Config(
        vocab_size=5000, max_length=500, embedding_dim=50, rnn_units=(128,), pooling="last",
        embedding_dropout=0.0, word_dropout=0.0, dropout=0.5, global_batch_size=128, epochs=3,
        optimizer="adam", learning_rate=1e-3, schedule="constant", warmup_steps=0,
        weight_decay=0.0, clip_norm=0.0, ema_momentum=0.0),
    # Tiny: seconds on a laptop CPU, for debugging the job end to end.
    "local": Config(
        vocab_size=2000, max_length=64, embedding_dim=16, rnn_units=(8,), embedding_dropout=0.0,
        word_dropout=0.0, global_batch_size=16, epochs=1, warmup_steps=5, eval_batch_size=64,
        checkpoint_every_steps=20, log_every_steps=5, sort_window_batches=4, ema_momentum=0.0),
}


def get_preset(name):
  """Returns the named preset, or raises ValueError listing the names."""
  if name not in PRESETS:
    raise ValueError(f"Unknown preset {name!r}; choose one of {sorted(PRESETS)}.")
  return PRESETS[name]
