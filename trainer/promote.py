r"""Promotes an exported model to production only if its test accuracy is better.

  python -m trainer.promote --candidate=/tmp/imdb_run/export/1795903751 \
      --production=gs://my-bucket/imdb/production [--min_improvement=0.005]

Production (local or gs://) keeps every promoted model under models/, the pointer CURRENT.json
switched in one compare-and-swap step, and one record per decision under decisions/. The decision
is printed as one JSON line; the exit code is 0 whether the candidate was promoted or refused.
The work is `serving.promote.promote`.
"""

import dataclasses
import json

from trainer import cli
from trainer.config import option
from trainer.config import Options
from trainer.serving import promote


@dataclasses.dataclass(frozen=True)
class PromoteOptions(Options):
  """The flags of promote."""
  candidate: str | None = option(None, "Export folder to promote (local or gs://).",
                                 required=True)
  production: str | None = option(None, "Production folder (local or gs://).", required=True)
  min_improvement: float = option(0.0, "Least test-accuracy gain over production that "
                                  "promotes, e.g. 0.005.")


def main():
  """Promotes or refuses the candidate and prints the decision as one JSON line."""
  options = cli.options_from_flags(PromoteOptions())
  record = promote.promote(options.candidate, options.production, options.min_improvement)
  print(json.dumps(record, sort_keys=True), flush=True)


if __name__ == "__main__":
  cli.define_option_flags(PromoteOptions)
  cli.run(main)
