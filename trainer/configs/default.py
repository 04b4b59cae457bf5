r"""Our configuration for IMDB on a small budget: BiGRU(64), word and channel dropout, EMA, AdamW.

  python -m trainer.train --input=../shared/data/aclImdb_v1_labeled.tar.gz \
      --workdir=/tmp/imdb_run --preset=default

Expected (docs/benchmarks.md, `benchmarks/accuracy.py --preset=default --seeds=0,1,2`,
2026-12-06): test accuracy 0.9012 +- 0.0029 over three seeds (2,110 steps: 3 epochs of batch 32;
6 to 8 minutes each on a 2-core CPU).
"""

from trainer import config


def get_config():
  """The library's defaults: `config.Config()` is this preset."""
  return config.Config()
