"""benchmarks/tables.py: tables made from result files, left alone without them."""

import json
import os
import sys

import pytest

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(__file__)), "benchmarks"))
import tables  # pylint: disable=g-import-not-at-top,wrong-import-position

_RUN = {"date": "2026-12-03T17:00:00+00:00", "machine": "m 2 cores", "git_revision": "abc123"}


@pytest.fixture
def results(tmp_path, monkeypatch):
  """An empty results folder that tables.py reads."""
  monkeypatch.setattr(tables, "RESULTS", str(tmp_path))
  return tmp_path


def test_a_table_comes_from_its_result_file(results):
  """The numbers and the file's name and run appear between the markers; the rest is kept."""
  numbers = {f"{key}_{field}": value for key in ("padded_batch", "bucket_by_sequence_length",
                                                  "ours", "ours_stream")
             for field, value in (("examples_per_s", 123456), ("tokens_per_s", 7654321),
                                  ("padded_tokens_per_example", 254.1),
                                  ("padding_ratio", 1.0141))}
  (results / "input-pipeline-500.json").write_text(json.dumps({
      **_RUN, **numbers, "ours_vs_bucket_by_sequence_length": 12.5,
      "ours_vs_padded_batch": 1.02, "ours_stream_vs_ours": 0.61, "per_replica_batch_size": 128,
      "rounds": 5, "seconds_per_round": 3.0}))
  document = ("intro\n<!-- table:input-pipeline-500 -->\nold\n"
              "<!-- /table:input-pipeline-500 -->\nend")
  rendered = tables.render(document)
  assert rendered.startswith("intro\n<!-- table:input-pipeline-500 -->\n| pipeline |")
  assert "| ours, streaming | 123,456 | 7,654,321 | 254.1 | 1.0141 |" in rendered
  assert "12.5x the examples/s of `bucket_by_sequence_length`" in rendered
  assert "medians of 5 rounds of 3.0 s per pipeline" in rendered
  assert "`benchmarks/results/input-pipeline-500.json` (2026-12-03T17:00:00+00:00" in rendered
  assert "old" not in rendered and rendered.endswith("<!-- /table:input-pipeline-500 -->\nend")
  assert tables.render(rendered) == rendered  # Made again: the same.


def test_a_table_without_its_result_file_is_left_alone(results):
  """No result file: the region stays as written."""
  document = "<!-- table:scale -->\nmeasured by hand\n<!-- /table:scale -->"
  assert tables.render(document) == document


def test_accuracy_over_seeds_is_mean_and_standard_deviation(results):
  """A summary file gives one row, mean ± std over its seeds; its seed files give no row of
  their own; a configuration run once keeps its single row."""
  for seed, accuracy in ((0, 0.9), (1, 0.902)):
    (results / f"accuracy-default-best-seed{seed}.json").write_text(json.dumps({
        "preset": "default", "export": "best", "seed": seed, "test_accuracy": accuracy,
        "wall_seconds": 600.0, "train_examples_per_s": 130.0, "date": "2026-12-06"}))
  (results / "accuracy-default-best-summary.json").write_text(json.dumps({
      "preset": "default", "export": "best", "seeds": [0, 1], "test_accuracy_mean": 0.901,
      "test_accuracy_std": 0.0014, "test_accuracy_min": 0.9, "test_accuracy_max": 0.902,
      "wall_seconds_mean": 600.0, "train_examples_per_s_mean": 130.0, **_RUN}))
  (results / "accuracy-keras_example-final-seed0.json").write_text(json.dumps({
      "preset": "keras_example", "export": "final", "seed": 0, "test_accuracy": 0.8584,
      "wall_seconds": 295.0, "train_examples_per_s": 200.0, "date": "2026-12-03"}))
  table = tables.accuracy_table()
  assert "| `default` (best weights) | **0.9010 ± 0.0014** | 0.9000-0.9020 | 0, 1 |" in table
  assert "| `keras_example` (final weights) | **0.8584** | - | 0 |" in table
  assert table.count("`default`") == 1
