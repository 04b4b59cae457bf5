r"""What an export says about a few reviews a person would try: the ones it gets right and wrong.

  python benchmarks/examples.py --model=/tmp/imdb_run [--name=default] [--test_reviews=5000]

Classifies a fixed set of short reviews (plain ones both ways, a mixed one, sarcasm, other
languages, an empty one) with `trainer.serving.predict`, prints one line each, and measures the
share of unknown words (`oov_share`) over the first --test_reviews test reviews of --data (by
file name), the English baseline of predict's warning. Writes both to
benchmarks/results/examples-<name>.json, from which docs/operations.md's table is made.
"""

import json
import tempfile

from absl import app
from absl import flags
import numpy as np

import common
from trainer.data import sources
from trainer.serving import evaluation
from trainer.serving import export
from trainer.serving import predict

FLAGS = flags.FLAGS
flags.DEFINE_string("model", None, "An export, a folder of exports, or a training workdir.",
                    required=True)
flags.DEFINE_string("name", "default", "Names the result file: examples-<name>.json.")
flags.DEFINE_integer("test_reviews", 5000, "Test reviews whose share of unknown words is measured.")
common.define_tarball_flag()

# (review, what a reader would call it, what it tries), the reader's label first.
EXAMPLES = (
    ("A wonderful, moving film. The cast is superb and the story stays with you.", "positive",
     "plain praise"),
    ("One of the best films I have seen this year: funny, tender and beautifully shot.",
     "positive", "plain praise"),
    ("The acting was wooden and the plot made no sense. I walked out halfway through.",
     "negative", "plain criticism"),
    ("Boring, predictable and far too long. A waste of a good cast.", "negative",
     "plain criticism"),
    ("I expected to hate it, but it won me over completely.", "positive",
     "a turn from negative words"),
    ("Two hours I will never get back.", "negative", "an idiom without sentiment words"),
    ("Oh great, another sequel nobody asked for. Just what the world needed.", "negative",
     "sarcasm"),
    ("Un film magnifique, je le recommande à tous.", "positive", "French"),
    ("Ein wunderbarer Film, den ich jedem empfehle.", "positive", "German"),
    ("素晴らしい映画でした。", "positive", "Japanese"),
    ("", None, "empty"),
)


def test_oov_shares(path, workdir):
  """Quantiles of the share of unknown words over the first --test_reviews test reviews."""
  texts = evaluation.test_split(sources.read_tarball(
      common.tarball_or_generated(FLAGS.data, workdir))).texts[:FLAGS.test_reviews]
  seen = evaluation.signals(path, texts)
  shares = seen.oov_tokens / np.maximum(seen.token_count, 1)
  quantiles = {"median": 0.5, "p99": 0.99, "max": 1.0}
  return {"reviews": len(texts), "source": FLAGS.data,
          "above_warning": int(np.sum(shares > predict.MAX_TRUSTED_OOV_SHARE)),
          **{name: round(float(np.quantile(shares, q)), 4) for name, q in quantiles.items()}}


def main(argv):
  """Classifies the examples, prints and writes them."""
  del argv
  serve, path = predict.load(FLAGS.model)
  predictions = predict.predict(serve, [review for review, _, _ in EXAMPLES])
  rows = []
  for (review, expected, kind), prediction in zip(EXAMPLES, predictions):
    row = {"review": review, "expected": expected, "kind": kind, **prediction,
           "right": None if expected is None else prediction["sentiment"] == expected}
    print(predict.format_prediction(len(rows), review, prediction, "text"), f"({kind})")
    rows.append(row)
  summary = {"model": path, "version": export.load_metadata(path)["version"], "examples": rows,
             "test_oov_share": test_oov_shares(path, tempfile.mkdtemp(prefix="examples_")),
             **common.run_facts()}
  common.write_result(f"examples-{FLAGS.name}.json", summary)
  print(json.dumps({"right": sum(bool(row["right"]) for row in rows),
                    "judged": sum(row["right"] is not None for row in rows),
                    "test_oov_share": summary["test_oov_share"]}))


if __name__ == "__main__":
  app.run(main)
