r"""Our configuration for IMDB on a small budget: BiLSTM(64) with word dropout, EMA, AdamW.

  python -m trainer.train --input=../shared/data/aclImdb_v1_labeled.tar.gz \
      --workdir=/tmp/imdb_run --preset=default

Expected (docs/benchmarks.md, `benchmarks/accuracy.py --preset=default`): test accuracy 0.8954,
AUC 0.961, in 391 s on a 2-core CPU (2,110 steps: 3 epochs of batch 32).
"""

from trainer import config


def get_config():
  """10k words, up to 1,000 tokens (the last), dropout on embeddings, words and output."""
  return config.override(config.Config(), vocab_size=10000)
