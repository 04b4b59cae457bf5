r"""The keras-io example "Bidirectional LSTM on IMDB", as written there.

  python -m trainer.train --input=../shared/data/aclImdb_v1_labeled.tar.gz \
      --workdir=/tmp/imdb_keras_example --preset=keras_example

20k words, the last 200 tokens, Embedding 128, two BiLSTM(64) (final states), Adam 1e-3,
batch 32, 2 epochs, tested with the final weights. Measured (docs/benchmarks.md,
`benchmarks/accuracy.py --preset=keras_example --seeds=0`, 2026-12-06): test accuracy 0.7905 in
365 s; its validation accuracy fell from 0.838 after the first epoch to 0.797 after the second
(no regularisation). The example reports 0.84-0.86.
"""

from trainer import config


def get_config():
  """The keras-io model and optimizer, no extras."""
  return config.override(
      config.Config(), rnn="lstm", vocab_size=20000, max_length=200, embedding_dim=128,
      rnn_units=(64, 64), pooling="last", embedding_dropout=0.0, word_dropout=0.0, dropout=0.0,
      global_batch_size=32, epochs=2.0, optimizer="adam", learning_rate=1e-3,
      schedule="constant", warmup_steps=0, weight_decay=0.0, clip_norm=0.0, ema_momentum=0.0,
      export="final")
