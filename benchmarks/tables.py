r"""Writes the tables of README.md and docs/ from their sources: result files and the config.

  python benchmarks/tables.py [--check]

Each table sits between `<!-- table:NAME -->` and `<!-- /table:NAME -->` in a Markdown file and
is replaced by the table made from its source: a result file of benchmarks/results/ (named under
the table, so every published number traces to a file a benchmark command wrote), or the fields
of trainer/config.py (the config table, so the docs list every field with its default). A table
whose result file is missing is left as it is. --check only reports the tables that are out of
date (exit code 1).
"""

import dataclasses
import json
import os
import re
import sys

REPOSITORY = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPOSITORY)  # The trainer package, run from a checkout.
from trainer import config as config_lib  # pylint: disable=g-import-not-at-top,wrong-import-position
RESULTS = os.path.join(REPOSITORY, "benchmarks", "results")
DOCUMENTS = ("README.md", "docs/benchmarks.md", "docs/data.md", "docs/scaling.md",
             "docs/training.md", "docs/operations.md")


def _load(name):
  """A result file's JSON, or None when there is none."""
  path = os.path.join(RESULTS, name)
  if not os.path.exists(path):
    return None
  with open(path) as f:
    return json.load(f)


def _source(name, result):
  """The line naming the file and the run a table comes from."""
  facts = ", ".join(str(result[key]) for key in ("date", "machine", "git_revision")
                    if key in result)
  return f"\nFrom `benchmarks/results/{name}` ({facts})."


def _rows(header, rows, numbers=True):
  """A Markdown table; with `numbers`, the columns after the first are right-aligned."""
  lines = ["| " + " | ".join(header) + " |",
           "| " + " | ".join("---" if i == 0 or not numbers else "---:"
                             for i in range(len(header))) + " |"]
  lines += ["| " + " | ".join(str(cell) for cell in row) + " |" for row in rows]
  return "\n".join(lines)


def input_pipeline_table(max_length):
  """Ours (in memory, streaming) vs `padded_batch` and `bucket_by_sequence_length`."""
  name = f"input-pipeline-{max_length}.json"
  result = _load(name)
  if result is None:
    return None
  names = {"padded_batch": f"`padded_batch` to {max_length}",
           "bucket_by_sequence_length": "`bucket_by_sequence_length`",
           "ours": "ours, in memory", "ours_stream": "ours, streaming"}
  rows = [(label, f"{result[f'{key}_examples_per_s']:,}", f"{result[f'{key}_tokens_per_s']:,}",
           result[f"{key}_padded_tokens_per_example"], result[f"{key}_padding_ratio"])
          for key, label in names.items() if f"{key}_examples_per_s" in result]
  table = _rows(("pipeline", "examples/s", "tokens/s", "padded tokens / example",
                 "padded / true tokens"), rows)
  ratios = (f"\nOurs: {result['ours_vs_bucket_by_sequence_length']}x the examples/s of "
            f"`bucket_by_sequence_length`, {result['ours_vs_padded_batch']}x those of "
            f"`padded_batch`; streaming {result['ours_stream_vs_ours']}x in memory. Train split,"
            f" batch {result['per_replica_batch_size']}, medians of {result['rounds']} rounds of "
            f"{result['seconds_per_round']} s per pipeline, read in the graph after a warm-up "
            f"epoch.")
  if "cores" in result:
    ratios += (" Cores per GPU at 150,000 examples/s: " + ", ".join(
        f"{150000 * result['cores'] / result[f'{key}_examples_per_s']:.2f} ({label})"
        for key, label in (("ours", "in memory"), ("ours_stream", "streaming"))
        if f"{key}_examples_per_s" in result) + ".")
  return table + "\n" + ratios + _source(name, result)


def scale_table():
  """Prepare and one epoch at 1x, 4x, 16x IMDB."""
  result = _load("scale.json")
  if result is None:
    return None
  labels = sorted(result["prepare_seconds"], key=lambda label: int(label[:-1]))  # "16x" last.
  rows = []
  for label in labels:
    rows.append((label, f"{result['reviews'][label]:,}", result["prepare_seconds"][label],
                 f"{result['prepare_reviews_per_s'][label]:,}",
                 f"{result['prepare_peak_rss_mb'][label]:,}",
                 f"{result['pipeline_examples_per_s_memory'][label]:,}",
                 f"{result['pipeline_examples_per_s_stream'][label]:,}",
                 f"{result['pipeline_peak_rss_mb_memory'][label]:,} / "
                 f"{result['pipeline_peak_rss_mb_stream'][label]:,}",
                 result["padding_ratio_stream"][label]))
  table = _rows(("corpus", "reviews", "prepare s", "reviews/s", "prepare peak MB",
                 "epoch ex/s, memory", "epoch ex/s, stream", "epoch peak MB, memory / stream",
                 "stream padding"), rows)
  growth = result["growth"]
  notes = (f"\nGrowth {labels[0]} -> {labels[-1]}: {growth['reviews_ratio']}x the reviews, "
           f"{growth['time_per_review_ratio']}x the prepare time per review, "
           f"{growth['peak_rss_ratio']}x the peak memory.")
  if "baseline_prepare_seconds_1x" in result:
    rounds = result.get("prepare_seconds_1x_rounds")
    notes += (f" The in-memory prepare of {result['baseline_revision']} at 1x in the same run: "
              f"{result['baseline_prepare_seconds_1x']} s, "
              f"{result['baseline_prepare_peak_rss_mb_1x']:,} MB peak (ours "
              f"{growth['prepare_1x_vs_baseline']}x its time"
              + (f"; medians of {len(rounds['ours'])} alternating runs each, baseline "
                 f"{rounds['baseline']} s, ours {rounds['ours']} s" if rounds else "")
              + f"); same vocabulary and reviews: {result['same_dataset_as_baseline_1x']}.")
  notes += f" Load average at the start: {result.get('load_average_at_start')}."
  return table + "\n" + notes + _source("scale.json", result)


def _configuration(name, result):
  """What an accuracy file measured: its result name (the preset unless --result_name), weights."""
  measured = name[len("accuracy-"):].rsplit("-seed", 1)[0].removesuffix("-summary.json")
  return f"`{measured.removesuffix('-' + result['export'])}` ({result['export']} weights)"


def accuracy_table():
  """Test accuracy of the configurations measured by benchmarks/accuracy.py, over their seeds.

  A configuration run over several seeds has a summary file (mean ± standard deviation); one
  run once has its seed's file only.
  """
  names = sorted(name for name in os.listdir(RESULTS) if name.startswith("accuracy-"))
  summaries = [name for name in names if name.endswith("-summary.json")]
  covered = {name.rsplit("-seed", 1)[0] for name in names if "-seed" in name} & {
      name[:-len("-summary.json")] for name in summaries}
  rows = []
  for name in summaries:
    result = _load(name)
    rows.append((_configuration(name, result),
                 f"**{result['test_accuracy_mean']:.4f} ± {result['test_accuracy_std']:.4f}**",
                 f"{result['test_accuracy_min']:.4f}-{result['test_accuracy_max']:.4f}",
                 ", ".join(map(str, result["seeds"])), f"{result['wall_seconds_mean']:,} s",
                 f"{result['train_examples_per_s_mean']:,}", result["date"][:10], f"`{name}`"))
  for name in names:
    if "-seed" in name and name.rsplit("-seed", 1)[0] not in covered:
      result = _load(name)
      rows.append((_configuration(name, result),
                   f"**{result['test_accuracy']:.4f}**", "-", str(result["seed"]),
                   f"{result['wall_seconds']:,} s", f"{result['train_examples_per_s']:,}",
                   result["date"][:10], f"`{name}`"))
  if not rows:
    return None
  return _rows(("preset", "test accuracy (mean ± std)", "min-max", "seeds", "wall time per run",
                "train examples/s", "date", "file"), rows) + (
                    "\n\nOn the official 25,000 test reviews; standard deviation over the seeds "
                    "(n - 1).")


def examples_table(name):
  """What an export said about the reviews of benchmarks/examples.py."""
  result = _load(f"examples-{name}.json")
  if result is None:
    return None
  rows = []
  for example in result["examples"]:
    verdict = {True: "right", False: "**wrong**", None: "-"}[example["right"]]
    rows.append((f"\"{example['review']}\"" if example["review"] else "(empty)", example["kind"],
                 example["sentiment"], f"{example['probability']:.3f}", verdict,
                 example.get("warning") or ""))
  shares = result["test_oov_share"]
  baseline = (f"\n\nShare of unknown words (`oov_share`) over the first {shares['reviews']:,} test "
              f"reviews (by file name): median {shares['median']:.2f}, 99th percentile "
              f"{shares['p99']:.2f}, max {shares['max']:.2f}; above the warning line: "
              f"{shares['above_warning']}.")
  return _rows(("review", "what it tries", "answer", "probability positive", "", "warning"),
               rows, numbers=False) + baseline + _source(f"examples-{name}.json", result)


def _percent(value):
  """A share as a signed percentage, or "-" when absent."""
  return "-" if value is None else f"{value:+.2%}"


def warm_start_table(name):
  """Cold vs warm start (benchmarks/warm_start.py), and what promotion decided of each."""
  result = _load(f"warm-start-{name}.json")
  if result is None:
    return None
  runs = _rows(("run", "first validation (step: accuracy)",
                f"steps to production's {result['production_validation_accuracy']:.4f}",
                "best validation", "test accuracy", "steps", "wall time"),
               [(label, f"{run['first_validation']['step']}: {run['first_validation']['accuracy']}",
                 run["steps_to_production_accuracy"] or "never", run["best_validation_accuracy"],
                 run["test_accuracy"], f"{run['steps']:,}", f"{run['wall_seconds']:,} s")
                for label, run in (("cold (random weights)", result["cold"]),
                                   ("warm (from production)", result["warm"]))])
  decided = [(f"`{label}`", record["verdict"], record["candidate_only_correct"],
              record["production_only_correct"], f"{record['p_value_better']:.3g}",
              f"{record['p_value_worse']:.3g}", _percent(record["detectable_difference"]),
              " to ".join(map(_percent, record["bootstrap"]["interval"])),
              f"{record['bootstrap']['p_value_better']:.3g}")
             for label, record in result["decisions"].items() if record["bootstrap"]]
  decisions = _rows(("candidate", "verdict", "b (only it right)", "c (only production)",
                     "McNemar p better", "p worse", "detectable (power 0.8)",
                     "movie bootstrap interval", "bootstrap p better"), decided)
  return (f"Production: `{result['preset']}` trained {result['production_epochs']:g} epoch(s) "
          f"({result['production_steps']:,} steps, seed 0): validation "
          f"{result['production_validation_accuracy']:.4f}, test "
          f"{result['production_test_accuracy']:.4f}. Cold and warm: {result['epochs']:g} epoch(s), "
          f"seed {result['seed']}, validated every {result['eval_every_steps']} steps.\n\n"
          + runs + "\n\nPromotion on the source's test reviews (`--min_improvement="
          + f"{result['flags'].get('min_improvement', 0.005)}`; cold against production, warm "
          "against the model in production after that):\n\n" + decisions
          + _source(f"warm-start-{name}.json", result))


def _default_text(value):
  """A field's default as its flag takes it."""
  if isinstance(value, tuple):
    return ",".join(map(str, value)) or "(none)"
  return "(unset)" if value is None or value == "" else str(value)


def config_table():
  """Every field of the config: its section, flag, default (the `default` preset), meaning."""
  rows = []
  for section in dataclasses.fields(config_lib.Config):
    for field in dataclasses.fields(section.type):
      choices = field.metadata.get("choices")
      meaning = field.metadata["help"] + (f" One of {', '.join(choices)}." if choices else "")
      rows.append((f"`{section.name}`", f"`--{field.name}`",
                   f"`{_default_text(field.default)}`",
                   meaning.replace("|", "\\|").replace("<", "&lt;").replace(">", "&gt;")))
  return _rows(("section", "flag", "default", "what it is"), rows, numbers=False) + (
      "\n\nMade from the fields of [trainer/config.py](../trainer/config.py) by "
      "`python benchmarks/tables.py`.")


TABLES = {
    "config": config_table,
    "accuracy": accuracy_table,
    "examples-default": lambda: examples_table("default"),
    "warm-start-default": lambda: warm_start_table("default"),
    "input-pipeline-500": lambda: input_pipeline_table(500),
    "input-pipeline-1000": lambda: input_pipeline_table(1000),
    "scale": scale_table,
}


def render(document):
  """The document with each of its tables made anew from the results."""
  def replace(match):
    """One table region."""
    table = TABLES[match.group(1)]()
    if table is None:
      return match.group(0)
    return f"<!-- table:{match.group(1)} -->\n{table}\n<!-- /table:{match.group(1)} -->"
  return re.sub(r"<!-- table:([\w-]+) -->.*?<!-- /table:\1 -->", replace, document,
                flags=re.DOTALL)


def main():
  """Rewrites (or with --check, checks) every document's tables."""
  stale = []
  for relative in DOCUMENTS:
    path = os.path.join(REPOSITORY, relative)
    with open(path) as f:
      document = f.read()
    rendered = render(document)
    if rendered != document:
      stale.append(relative)
      if "--check" not in sys.argv:
        with open(f"{path}.tables-tmp", "w") as f:  # Renamed when whole.
          f.write(rendered)
        os.replace(f"{path}.tables-tmp", path)
  print(("Out of date: " if "--check" in sys.argv else "Rewrote: ") + (", ".join(stale) or
                                                                       "nothing"))
  sys.exit(1 if stale and "--check" in sys.argv else 0)


if __name__ == "__main__":
  main()
