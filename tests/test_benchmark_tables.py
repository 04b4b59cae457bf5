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
