r"""Promotes an export to production only if it serves and beats production on the same reviews.

  python -m trainer.promote --candidate=/tmp/imdb_run/export/1795903751 \
      --production=gs://my-bucket/imdb/production --input=gs://my-bucket/aclImdb_v1.tar.gz \
      [--min_improvement=0.005] [--max_p_value=0.05] [--max_latency_ms=50]
  python -m trainer.promote --production=gs://my-bucket/imdb/production --rollback[=<model id>]

The candidate and the production model are both scored now on the test split of --input (the
source flags as in trainer.prepare); see `serving.promote` for the rule and the folder layout.
The decision is printed as one JSON line. Exit codes: 0 promoted, refused or rolled back;
2 bad input; 3 regression alert (the candidate is significantly worse than production);
5 the candidate (or the model to roll back to) failed the serving gate. --rollback points
production back at the model the current one replaced, or at the model named, once it serves.
"""

import dataclasses
import json

from absl import flags

from trainer import cli
from trainer.config import option
from trainer.config import Options
from trainer.data import sources
from trainer.errors import UserInputError
from trainer.serving import evaluation
from trainer.serving import export
from trainer.serving import promote

FLAGS = flags.FLAGS


@dataclasses.dataclass(frozen=True)
class PromoteOptions(Options):
  """The flags of promote beside the policy and the source."""
  candidate: str | None = option(None, "Export to promote (local or gs://); a folder of versions "
                                 "or a training workdir means its newest export.")
  production: str | None = option(None, "Production folder (local or gs://).", required=True)


class _RollbackParser(flags.ArgumentParser):
  """--rollback alone is "" (the previous model); --rollback=<id> is that id."""

  def parse(self, argument):
    """The model id to roll back to: "" for the previous one, None for --norollback."""
    return {"true": "", "false": None}.get(argument, argument)

  def flag_type(self):
    """Shown in --help."""
    return "model id"


def define_rollback_flag():
  """Defines --rollback, which takes an optional value."""
  flags.DEFINE_flag(flags.Flag(
      _RollbackParser(), flags.ArgumentSerializer(), "rollback", None,
      "Point production back at the model the current one replaced (--rollback), or at "
      "--rollback=<model id>; no candidate is needed.", boolean=True))


def main():
  """Promotes, refuses or rolls back, and prints the decision as one JSON line."""
  options = cli.options_from_flags(PromoteOptions())
  if FLAGS.rollback is not None:
    record = promote.rollback(options.production, FLAGS.rollback or None,
                              policy=cli.options_from_flags(promote.Policy()))
  elif not options.candidate:
    raise UserInputError("Pass --candidate=<export folder> to promote, or --rollback.")
  else:
    policy = cli.options_from_flags(promote.Policy())
    assessor = promote.Assessor(evaluation.test_split(cli.source_from_flags()))
    record = promote.promote(export.resolve_export(options.candidate), options.production,
                             assessor, policy)
  print(json.dumps(record, sort_keys=True), flush=True)
  promote.raise_alerts(record)


FLAG_GROUPS = (PromoteOptions, promote.Policy, sources.SourceOptions)

if __name__ == "__main__":
  cli.define_flags(FLAG_GROUPS)
  define_rollback_flag()
  cli.run(main)
