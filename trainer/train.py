r"""Trains, evaluates and exports the BiGRU (or BiLSTM) classifier.

  python -m trainer.train --input=../shared/data/aclImdb_v1_labeled.tar.gz --workdir=/tmp/imdb_run
  python -m trainer.train --data_dir=/tmp/imdb_prepared --workdir=/tmp/imdb_run --preset=local

Every field of the config (trainer/config.py) is a flag that overrides the --preset. Without
--data_dir, --input is first prepared into <workdir>/data with the data flags (--vocab_size,
--num_shards, ...). The same command runs on one device, on the GPUs of one host, or on every
worker of a cluster (TF_CONFIG, CLUSTER_SPEC, an Indexed Job or the cluster flags). The work is
`training.train_lib.train_and_evaluate`.
"""

import dataclasses

from trainer import cli
from trainer.cluster import strategy as strategy_lib
from trainer.config import option
from trainer.config import Options
from trainer.data import prepare
from trainer.data import sources
from trainer.errors import UserInputError
from trainer import storage
from trainer.training import train_lib
from trainer.training import train_log
from trainer.training import workdir as workdir_lib


@dataclasses.dataclass(frozen=True)
class TrainOptions(Options):
  """The flags of train beside the config, the source and the cluster."""
  workdir: str | None = option(None, "Output folder (local or gs://); a run there resumes. "
                               "Default on Vertex AI: the parent folder of AIP_MODEL_DIR.")


def workdir_from_flags():
  """The run folder of --workdir (or Vertex AI's); refused when missing or its name is empty."""
  workdir = cli.options_from_flags(TrainOptions()).workdir or workdir_lib.default_workdir()
  if not workdir:
    raise UserInputError("Give --workdir=<output folder> (local or gs://).")
  storage.check_run_folder(workdir, "--workdir")
  return workdir


def main():
  """Trains with the configuration given by the flags."""
  config = cli.config_from_flags()
  workdir = workdir_from_flags()
  # First of all TF: MultiWorkerMirroredStrategy needs it. A trained run needs no cluster.
  strategy = cli.strategy_from_flags(
      config, trained=train_lib.training_is_done(workdir, config.run.max_steps))
  config = prepare.prepare_for_run(config, cli.options_from_flags(sources.SourceOptions()).read,
                                   workdir, strategy_lib.num_workers(strategy))
  results = train_lib.train_and_evaluate(config, workdir, strategy)
  if strategy_lib.is_chief(strategy):  # It alone writes the results.
    print("\n".join(train_log.closing_summary(results, workdir)), flush=True)


FLAG_GROUPS = (*cli.RUN_FLAG_GROUPS, TrainOptions)

if __name__ == "__main__":
  cli.define_flags(FLAG_GROUPS)
  cli.run(main)
