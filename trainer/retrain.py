r"""The scheduled retraining job in one command: prepare if needed, gate, train, export, promote.

  python -m trainer.retrain --input=gs://bucket/aclImdb_v1.tar.gz \
      --data_cache=gs://bucket/imdb/data --runs_dir=gs://bucket/imdb/runs \
      --production=gs://bucket/imdb/production

Run it on every worker of a multi-host job, with the cluster flags of trainer.train: the chief
prepares and promotes, all train. The run folder is `<runs_dir>/<run_name>` (default: the UTC date
and time; pass a fixed --run_name, e.g. the Kubernetes Job's name, so that a restarted pod
resumes the same run). Every config field is a flag, as in trainer.train; --warm_start=production
starts from the production model's weights. Exit codes: 0 done (promoted or refused), 2 bad
input, 3 regression alert, 4 data drift refused, 5 the candidate failed the serving gate, 42
preempted (restart), 43 the chief never prepared or checked the data (retry).
The work is `training.retrain_lib.retrain`.
"""

import dataclasses

from trainer import cli
from trainer.cluster import strategy as strategy_lib
from trainer.config import option
from trainer.config import Options
from trainer.errors import UserInputError
from trainer.retraining import retrain_lib
from trainer.serving import promote
from trainer import storage
from trainer.training import train_lib


@dataclasses.dataclass(frozen=True)
class RetrainOptions(Options):
  """The flags of retrain beside the config, the source, the cluster and the gates."""
  data_cache: str | None = option(None, "Folder (local or gs://) of prepared datasets, one per "
                                  "source fingerprint.", required=True)
  runs_dir: str | None = option(None, "Folder (local or gs://) of the dated run folders.",
                                required=True)
  run_name: str | None = option(None, "This run's folder name (default: UTC date-time). A "
                                "fixed name resumes that run; on many workers, give one.")
  production: str | None = option(None, "Production folder (local or gs://) to promote to.",
                                  required=True)


def main():
  """Runs the scheduled job with the flags' settings."""
  config = cli.config_from_flags()
  options = cli.options_from_flags(RetrainOptions())
  run_name = retrain_lib.default_run_name() if options.run_name is None else options.run_name
  run_dir = storage.join(options.runs_dir, run_name)
  storage.check_run_folder(run_dir, "--runs_dir and --run_name")  # An empty --run_name too.
  # First of all TF: MultiWorkerMirroredStrategy needs it. A trained run needs no cluster.
  strategy = cli.strategy_from_flags(
      config, trained=train_lib.training_is_done(run_dir, config.run.max_steps))
  if strategy_lib.num_workers(strategy) > 1 and not options.run_name:
    raise UserInputError("Pass --run_name on a multi-worker job (e.g. the Job's name), so that "
                         "every worker trains in the same run folder.")
  retrain_lib.retrain(config, cli.source_from_flags(), options.data_cache, run_dir,
                      options.production, cli.options_from_flags(promote.Policy()),
                      cli.options_from_flags(retrain_lib.Gates()), strategy)


FLAG_GROUPS = (*cli.RUN_FLAG_GROUPS, RetrainOptions, promote.Policy, retrain_lib.Gates)

if __name__ == "__main__":
  cli.define_flags(FLAG_GROUPS)
  cli.run(main)
