r"""Classifies raw reviews with an exported model.

  python -m trainer.predict --model=/tmp/imdb_run/export "A wonderful film." "Dull and long."
  cat reviews.txt | python -m trainer.predict --model=/tmp/imdb_run/export --format=json

--model is an export (a version folder with `saved_model.pb`), a folder of versions, or a
training workdir. Reviews come from the arguments, or one per line on standard input. Each
review gives one output line: `probability<TAB>sentiment<TAB>the review's start`, followed by
`<TAB>WARNING: ...` when the review is empty or mostly of words the model does not know; or
with --format=json a JSON object with `index`, `probability`, `label` (1 = positive),
`sentiment`, `token_count`, `oov_share` (the share of its tokens the model does not know) and
`warning` (null when none).
"""

import dataclasses
import sys

from trainer import cli
from trainer.config import option
from trainer.config import Options
from trainer.serving import predict


@dataclasses.dataclass(frozen=True)
class PredictOptions(Options):
  """The flags of predict."""
  model: str | None = option(None, "An export, a folder of versioned exports, or a workdir.",
                             required=True)
  format: str = option("text", "text: probability, sentiment, review start; json: one JSON "
                       "object per line.", choices=("text", "json"))
  batch_size: int = option(256, "Reviews from standard input classified together.",
                           bound="positive")


def main(reviews):
  """Prints a prediction for each review of the arguments or of standard input."""
  options = cli.options_from_flags(PredictOptions())
  serve, _ = predict.load(options.model)
  batches = [reviews] if reviews else predict.batches_of_lines(sys.stdin, options.batch_size)
  index = 0
  for batch in batches:
    for review, prediction in zip(batch, predict.predict(serve, batch)):
      print(predict.format_prediction(index, review, prediction, options.format))
      index += 1


FLAG_GROUPS = (PredictOptions,)

if __name__ == "__main__":
  cli.define_flags(FLAG_GROUPS)
  cli.run(main, takes_arguments=True)
