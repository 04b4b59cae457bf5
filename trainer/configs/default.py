r"""Our configuration for IMDB on a small budget: BiLSTM(64) with word dropout, EMA, AdamW.

  python -m trainer.train --input=../shared/data/aclImdb_v1_labeled.tar.gz \
      --workdir=/tmp/imdb_run --preset=default

Expected (docs/benchmarks.md, `benchmarks/accuracy.py --preset=default`, 2026-12-03): test
accuracy 0.8936, AUC 0.9595 (2,110 steps: 3 epochs of batch 32; about 8 to 13 minutes on a 2-core
CPU).
"""

from trainer import config


def get_config():
  """The library's defaults: `config.Config()` is this preset."""
  return config.Config()
