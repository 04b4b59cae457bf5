r"""Tiny: a whole run in seconds on a laptop CPU, to check the job end to end.

  python -m trainer.train --input=../shared/data/aclImdb_v1_labeled.tar.gz \
      --workdir=/tmp/imdb_local --preset=local

Expected: it finishes and writes metrics.json and an export; its accuracy means nothing.
"""

from trainer import config


def get_config():
  """2k words, 64 tokens, BiGRU(8), a tenth of an epoch, frequent checkpoints and logs."""
  return config.override(
      config.Config(), vocab_size=2000, max_length=64, sort_window_batches=4, embedding_dim=16,
      rnn_units=(8,), embedding_dropout=0.0, word_dropout=0.0, global_batch_size=16,
      epochs=0.1, warmup_steps=5, ema_momentum=0.0, eval_batch_size=64,
      checkpoint_every_steps=20, log_every_steps=5)
