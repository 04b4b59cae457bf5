r"""The scheduled retraining job in one command: prepare if needed, train, export, promote.

  python -m trainer.retrain --input=gs://bucket/aclImdb_v1.tar.gz \
      --data_cache=gs://bucket/imdb/data --runs_dir=gs://bucket/imdb/runs \
      --production=gs://bucket/imdb/production

The run folder is `<runs_dir>/<run_name>` (default: the UTC date and time; pass a fixed
--run_name, e.g. the Kubernetes Job's name, so that a restarted pod resumes the same run). Every
config field is a flag, as in trainer.train. The work is `training.retrain_lib.retrain`.
"""

import dataclasses

from trainer import cli
from trainer.config import option
from trainer.config import Options
from trainer import storage
from trainer.training import retrain_lib


@dataclasses.dataclass(frozen=True)
class RetrainOptions(Options):
  """The flags of retrain beside the config, the source and the cluster."""
  data_cache: str | None = option(None, "Folder (local or gs://) of prepared datasets, one per "
                                  "source fingerprint.", required=True)
  runs_dir: str | None = option(None, "Folder (local or gs://) of the dated run folders.",
                                required=True)
  run_name: str | None = option(None, "This run's folder name (default: UTC date-time). A "
                                "fixed name resumes that run.")
  production: str | None = option(None, "Production folder (local or gs://) to promote to.",
                                  required=True)
  min_improvement: float = option(0.0, "Test accuracy the new model must gain over the "
                                  "production model to replace it.", bound="nonnegative")


def main():
  """Runs the scheduled job with the flags' settings."""
  config = cli.config_from_flags()
  strategy = cli.strategy_from_flags(config)  # First: MultiWorkerMirroredStrategy needs it.
  options = cli.options_from_flags(RetrainOptions())
  run_dir = storage.join(options.runs_dir, options.run_name or retrain_lib.default_run_name())
  retrain_lib.retrain(config, cli.source_from_flags(), options.data_cache, run_dir,
                      options.production, options.min_improvement, strategy)


if __name__ == "__main__":
  cli.define_run_flags()
  cli.define_option_flags(RetrainOptions)
  cli.run(main)
