r"""The classic course notebook's BiLSTM.

  python -m trainer.train --input=../shared/data/aclImdb_v1_labeled.tar.gz \
      --workdir=/tmp/imdb_seed_notebook --preset=seed_notebook

5k words, 500 tokens, Embedding 50, one BiLSTM(128) (final states), Dropout 0.5, Adam 1e-3,
batch 128, 3 epochs. Its accuracy has not been measured here; its speed has
(docs/benchmarks.md, `benchmarks/train_speed.py --preset=seed_notebook`).
"""

from trainer import config


def get_config():
  """The notebook's model and optimizer."""
  return config.override(
      config.Config(), rnn="lstm", vocab_size=5000, max_length=500, embedding_dim=50,
      rnn_units=(128,), pooling="last", embedding_dropout=0.0, word_dropout=0.0, dropout=0.5,
      global_batch_size=128, epochs=3.0, optimizer="adam", learning_rate=1e-3,
      schedule="constant", warmup_steps=0, weight_decay=0.0, clip_norm=0.0, ema_momentum=0.0,
      export="final")
