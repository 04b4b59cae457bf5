"""Prepare: output layout and metadata, the validation split, the vocabulary, safety, bad input."""

import collections
import glob
import hashlib
import json
import os
import subprocess
import sys
from unittest import mock

from apache_beam.runners.direct import direct_runner
import numpy as np
import pytest
import tensorflow as tf

from trainer.config import DataConfig
from trainer.data import beam_pipeline
from trainer.data import prepare
from trainer.data import prepared_dataset
from trainer.data import sources
from trainer.data import statistics
from trainer.data import survey
from trainer.data import text
from trainer.errors import UserInputError
from trainer import storage
from trainer.testing import synthetic_imdb

SMALL = DataConfig(vocab_size=30, num_shards=3, validation_fraction=0.25)


def read_records(data_dir, split):
  """Decodes every review of a split straight from its shards: list of feature dicts."""
  reviews = []
  for path in prepared_dataset.split_files(data_dir, split):
    for serialized in tf.data.TFRecordDataset(path).as_numpy_iterator():
      feature = tf.train.Example.FromString(serialized).features.feature
      reviews.append({"tokens": list(feature["tokens"].int64_list.value),
                      "label": feature["label"].int64_list.value[0],
                      "rating": feature["rating"].int64_list.value[0],
                      "name": feature["name"].bytes_list.value[0].decode()})
  return reviews


@pytest.mark.slow
def test_output_layout_and_metadata(tmp_path, aclimdb_tarball):
  """Shards, vocabulary and metadata agree with each other and with the source."""
  output_dir = str(tmp_path / "data")
  metadata = prepare.prepare(sources.read(aclimdb_tarball), output_dir, SMALL)
  assert metadata == prepared_dataset.load_metadata(output_dir)
  splits = metadata["splits"]
  assert splits["train"]["examples"] + splits["validation"]["examples"] == 48
  assert splits["test"]["examples"] == 48 and splits["test"]["labels"] == {"neg": 24, "pos": 24}
  for split, stats in splits.items():
    assert len(stats["shards"]) == 3
    assert sum(shard["examples"] for shard in stats["shards"]) == stats["examples"]
    records = read_records(output_dir, split)
    assert len(records) == stats["examples"]
    assert sum(r["label"] for r in records) == stats["labels"]["pos"]
    assert stats["token_length"]["max"] == max(len(r["tokens"]) for r in records)
  vocabulary = text.load_vocabulary(os.path.join(output_dir, "vocab.txt"))
  assert len(vocabulary) == metadata["vocab_size"] == 30
  assert metadata["source"]["sha256"] and metadata["source"]["content_sha256"]
  assert metadata["tokenizer_version"] == text.TOKENIZER_VERSION
  assert metadata["validation_grouped_by"] == "movie"
  shards = [shard["file"] for stats in splits.values() for shard in stats["shards"]]
  assert sorted(os.listdir(output_dir)) == sorted(shards + ["metadata.json", "vocab.txt"])


@pytest.mark.slow
def test_validation_holds_whole_movies_from_the_training_reviews(tmp_path, aclimdb_tarball):
  """No movie is on both sides; validation comes from train only; test is untouched."""
  corpus = sources.read(aclimdb_tarball)
  movie_of = {r.name: r.movie for r in corpus.reviews}
  output_dir = str(tmp_path / "data")
  prepare.prepare(corpus, output_dir, SMALL)
  names = {split: [r["name"] for r in read_records(output_dir, split)]
           for split in prepared_dataset.SPLITS}
  assert all(name.startswith("train/") for name in names["train"] + names["validation"])
  assert all(name.startswith("test/") for name in names["test"])
  train_movies = {movie_of[name] for name in names["train"]}
  validation_movies = {movie_of[name] for name in names["validation"]}
  assert validation_movies and not train_movies & validation_movies
  assert 12 <= len(names["validation"]) <= 12 + 8  # 25% of 48, in whole movies of up to 8.


def test_split_depends_on_movies_and_seed_not_on_reading_order():
  """Reviews read in another order (folder vs tarball) land on the same side."""
  reviews = [sources.Review("train", i % 2, b"x", f"r{i}", f"m{i % 10}") for i in range(40)]
  groups = lambda reviews, seed: prepare.validation_groups(
      survey.survey(reviews).train_group_sizes, 0.3, seed)
  forward = groups(reviews, 7)
  assert forward == groups(reviews[::-1], 7)
  assert forward != groups(reviews, 8)
  assert sum(f"m{i % 10}" in forward for i in range(40)) == 12  # 3 whole movies of 4 reviews.


@pytest.mark.slow
def test_vocabulary_comes_from_the_train_split_only(tmp_path, corpus_files):
  """A word only in test (or only in validation) reviews is out of vocabulary."""
  files = dict(corpus_files)
  files["aclImdb/test/pos/0_9.txt"] = b"zyzzyva " * 50
  corpus = sources.read(synthetic_imdb.write_tarball(files, str(tmp_path / "custom.tar.gz")))
  output_dir = str(tmp_path / "data")
  prepare.prepare(corpus, output_dir, DataConfig(vocab_size=10000, num_shards=2))
  vocabulary = text.load_vocabulary(os.path.join(output_dir, "vocab.txt"))
  assert "zyzzyva" not in vocabulary
  test_review = next(r for r in read_records(output_dir, "test") if r["name"] == "test/pos/0_9.txt")
  assert test_review["tokens"] == [text.OOV_ID] * 50
  train_texts = [files[f"aclImdb/{r['name']}"] for r in read_records(output_dir, "train")]
  train_tokens = set(text.tokenize(tf.constant(train_texts)).flat_values.numpy())
  assert set(vocabulary[2:]) == {t.decode() for t in train_tokens}


@pytest.mark.slow
def test_exported_graph_encodes_raw_text_like_the_records(tmp_path, aclimdb_tarball, corpus_files):
  """Raw review -> ids inside a reloaded SavedModel equals the ids prepare wrote."""
  output_dir = str(tmp_path / "data")
  prepare.prepare(sources.read(aclimdb_tarball), output_dir, SMALL)
  module = tf.Module()
  module.table = text.build_lookup_table(text.load_vocabulary(f"{output_dir}/vocab.txt"))
  module.encode = tf.function(lambda texts: text.encode(texts, module.table).to_tensor(),
                              input_signature=[tf.TensorSpec([None], tf.string)])
  tf.saved_model.save(module, str(tmp_path / "encoder"))
  encoder = tf.saved_model.load(str(tmp_path / "encoder"))
  records = read_records(output_dir, "test") + read_records(output_dir, "validation")
  raw = tf.constant([corpus_files[f"aclImdb/{r['name']}"] for r in records])
  ids = encoder.encode(raw).numpy()
  for row, record in zip(ids, records):
    assert list(row[:len(record["tokens"])]) == record["tokens"]
    assert not row[len(record["tokens"]):].any()


@pytest.mark.slow
def test_same_input_twice_gives_identical_files(tmp_path, aclimdb_tarball):
  """Prepare is deterministic: two runs write byte-identical datasets."""
  corpus = sources.read(aclimdb_tarball)
  for name in ("a", "b"):
    prepare.prepare(corpus, str(tmp_path / name), SMALL)
  names = sorted(os.listdir(tmp_path / "a"))
  assert names == sorted(os.listdir(tmp_path / "b"))
  for name in names:
    assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes(), name


@pytest.mark.slow
def test_rerun_is_a_no_op_and_a_different_dataset_is_protected(tmp_path, aclimdb_tarball):
  """Same source and options: nothing rewritten; other options: refused unless --overwrite."""
  corpus = sources.read(aclimdb_tarball)
  output_dir = tmp_path / "data"
  prepare.prepare(corpus, str(output_dir), SMALL)
  before = {p.name: p.stat().st_mtime_ns for p in output_dir.iterdir()}
  prepare.prepare(corpus, str(output_dir), SMALL)
  assert {p.name: p.stat().st_mtime_ns for p in output_dir.iterdir()} == before
  other = DataConfig(vocab_size=40, num_shards=2)
  with pytest.raises(UserInputError, match="different prepared dataset.*--overwrite"):
    prepare.prepare(corpus, str(output_dir), other)
  assert {p.name: p.stat().st_mtime_ns for p in output_dir.iterdir()} == before
  metadata = prepare.prepare(corpus, str(output_dir), other, overwrite=True)
  assert metadata["vocab_size"] == 40
  assert len(glob.glob(str(output_dir / "*.tfrecord"))) == 3 * 2  # Old 3-shard files are gone.


@pytest.mark.slow
def test_foreign_files_are_never_deleted(tmp_path, aclimdb_tarball):
  """A folder with files prepare did not write is refused, even with --overwrite."""
  (tmp_path / "data").mkdir()
  (tmp_path / "data" / "thesis.tex").write_text("precious")
  with pytest.raises(UserInputError, match="thesis.tex.*empty or new folder"):
    prepare.prepare(sources.read(aclimdb_tarball), str(tmp_path / "data"), SMALL, overwrite=True)
  assert (tmp_path / "data" / "thesis.tex").read_text() == "precious"


@pytest.mark.slow
def test_interrupted_run_leaves_no_complete_looking_dataset(tmp_path, aclimdb_tarball):
  """A failure mid-way leaves no metadata.json; the next run cleans up and completes."""
  corpus = sources.read(aclimdb_tarball)
  output_dir = str(tmp_path / "data")
  real_publish = storage.publish

  def publish_then_die_after_a_shard(temporary_path, path):
    """Publishes; once that was a shard, dies as if killed."""
    real_publish(temporary_path, path)
    if path.endswith(".tfrecord"):
      raise KeyboardInterrupt

  with mock.patch.object(beam_pipeline.storage, "publish", publish_then_die_after_a_shard):
    with pytest.raises(Exception):  # Beam may wrap it.
      prepare.prepare(corpus, output_dir, SMALL)
  assert glob.glob(f"{output_dir}/*.tfrecord") and not os.path.exists(f"{output_dir}/metadata.json")
  with pytest.raises(UserInputError, match="not a prepared dataset.*python -m trainer.prepare"):
    prepared_dataset.load_metadata(output_dir)
  prepare.prepare(corpus, output_dir, SMALL)
  assert len(read_records(output_dir, "test")) == 48


@pytest.mark.slow
def test_a_failed_shard_write_leaves_no_partial_file_under_its_name(tmp_path, aclimdb_tarball):
  """Shards are written under a temporary name and renamed only when complete."""
  with mock.patch.object(beam_pipeline.storage, "publish", side_effect=OSError("disk full")):
    with pytest.raises(Exception, match="disk full"):  # Beam may wrap the OSError.
      prepare.prepare(sources.read(aclimdb_tarball), str(tmp_path / "data"), SMALL)
  assert not glob.glob(str(tmp_path / "data" / "*.tfrecord"))


@pytest.mark.slow
def test_empty_and_non_utf8_reviews_are_reported(tmp_path, aclimdb_dir):
  """An empty review is dropped and listed; invalid UTF-8 is replaced and counted."""
  empty = glob.glob(os.path.join(aclimdb_dir, "test", "neg", "3_*.txt"))[0]
  open(empty, "wb").close()
  not_utf8 = glob.glob(os.path.join(aclimdb_dir, "test", "pos", "4_*.txt"))[0]
  with open(not_utf8, "wb") as f:
    f.write(b"caf\xe9 was great \xff")
  output_dir = str(tmp_path / "data")
  metadata = prepare.prepare(sources.read(aclimdb_dir), output_dir, SMALL)
  test = metadata["splits"]["test"]
  assert metadata["empty_reviews"] == "dropped"
  assert test["dropped_empty"] == {"count": 1, "reviews": [f"test/neg/{os.path.basename(empty)}"]}
  assert test["examples"] == 47
  not_utf8_name = f"test/pos/{os.path.basename(not_utf8)}"
  assert test["invalid_utf8"] == {"count": 1, "reviews": [not_utf8_name]}
  record = next(r for r in read_records(output_dir, "test") if r["name"] == not_utf8_name)
  assert len(record["tokens"]) == 5  # caf, \ufffd, was, great, \ufffd


@pytest.mark.slow
def test_the_default_runner_runs_in_this_process_without_prism(tmp_path, aclimdb_tarball):
  """DirectRunner means Beam's in-process engine: its switch to Prism (a download) is skipped."""
  refuse = mock.Mock(side_effect=AssertionError("the switching DirectRunner ran"))
  with mock.patch.object(direct_runner.SwitchingDirectRunner, "run_pipeline", refuse):
    metadata = prepare.prepare(sources.read(aclimdb_tarball), str(tmp_path / "data"), SMALL)
  assert metadata["splits"]["test"]["examples"] == 48 and not refuse.called


@pytest.mark.slow
def test_non_local_output_through_gfile(aclimdb_tarball):
  """Any gfile URI works as --output_dir (ram:// here, gs:// in the cloud)."""
  output_dir = "ram://prepare-test/data"
  prepare.prepare(sources.read(aclimdb_tarball), output_dir, SMALL)
  metadata = prepared_dataset.load_metadata(output_dir)
  assert tf.io.gfile.exists(prepared_dataset.split_files(output_dir, "test", metadata)[0])


@pytest.mark.parametrize("options, flag", [
    ({"vocab_size": 2}, "--vocab_size=2"),
    ({"validation_fraction": 1.0}, "--validation_fraction=1.0"),
    ({"num_shards": 0}, "--num_shards=0"),
])
def test_bad_options_are_named(options, flag):
  """Options that cannot work cannot be made: refused by field name."""
  with pytest.raises(ValueError, match=flag.lstrip("-")):
    DataConfig(**options)


def run_cli(*args):
  """Runs `python -m trainer.prepare` in a fresh process."""
  return subprocess.run([sys.executable, "-m", "trainer.prepare", *args], capture_output=True,
                        text=True, timeout=300, check=False)


@pytest.mark.slow
def test_cli_prepares_and_reports_bad_input_with_exit_code_2(tmp_path, aclimdb_tarball):
  """The README command works; a bad path gives one clear line and exit code 2."""
  ok = run_cli(f"--input={aclimdb_tarball}", f"--output_dir={tmp_path / 'data'}",
               "--num_shards=2", "--vocab_size=25")
  assert ok.returncode == 0, ok.stderr
  assert prepared_dataset.load_metadata(str(tmp_path / "data"))["vocab_size"] == 25
  bad = run_cli(f"--input={tmp_path / 'missing.tar.gz'}", f"--output_dir={tmp_path / 'other'}")
  assert bad.returncode == 2
  assert "error: " in bad.stderr and "missing.tar.gz does not exist" in bad.stderr
  assert "Traceback" not in bad.stderr
  assert not os.path.exists(tmp_path / "other")


def _records_digest(data_dir, split):
  """sha256 (first 16 hex) of a split's (name, tokens, label, rating), sorted by name."""
  rows = sorted([r["name"], r["tokens"], r["label"], r["rating"]]
                for r in read_records(data_dir, split))
  return hashlib.sha256(json.dumps(rows).encode()).hexdigest()[:16]


def _stats_digest(metadata, split):
  """sha256 (first 16 hex) of a split's statistics in metadata.json, without the shards."""
  stats = {k: v for k, v in metadata["splits"][split].items() if k != "shards"}
  return hashlib.sha256(json.dumps(stats, sort_keys=True).encode()).hexdigest()[:16]


# What the in-memory prepare before Apache Beam (a480c56) wrote for these corpora: digests of
# vocab.txt, then per split of the examples and of the statistics of metadata.json.
_BEFORE_BEAM = {
    "small": ("d0d14561bc94d893", {"train": ("df03e50ee46ff064", "c4310f2d98dadd8d"),
                                   "validation": ("2b014512f8b0c00a", "c3ac66baf57e050d"),
                                   "test": ("f90400be56244fe3", "1c915f20eb1697e1")}),
    "learnable": ("c2e3b9d5d4a1a22e", {"train": ("e1b5b79ec756a924", "e7730c5024eb915b"),
                                       "validation": ("eb19d9bae2853067", "b69f681c862af769"),
                                       "test": ("719b7202b336cb2b", "94f0ff4a02215499")}),
}


@pytest.mark.slow
@pytest.mark.parametrize("case", sorted(_BEFORE_BEAM))
def test_same_dataset_as_the_in_memory_prepare_before_beam(tmp_path, case):
  """Same vocabulary, split membership, examples and statistics as the prepare it replaced."""
  if case == "small":  # With an empty and a non-UTF-8 review.
    files = synthetic_imdb.generate(reviews_per_folder=24, reviews_per_movie=4, seed=1)
    files["aclImdb/test/neg/3_2.txt"] = b""
    files["aclImdb/train/pos/4_9.txt"] = b"caf\xe9 was great \xff"
    options = DataConfig(vocab_size=30, num_shards=3, validation_fraction=0.25)
  else:  # All words in the vocabulary, another seed.
    files = synthetic_imdb.generate(reviews_per_folder=100, reviews_per_movie=5,
                                    median_words=30, seed=2)
    options = DataConfig(num_shards=3, split_seed=5)
  tarball = synthetic_imdb.write_tarball(files, str(tmp_path / "aclImdb_v1.tar.gz"))
  metadata = prepare.prepare(sources.read(tarball), str(tmp_path / "data"), options)
  vocabulary_digest, split_digests = _BEFORE_BEAM[case]
  vocabulary = (tmp_path / "data" / "vocab.txt").read_bytes()
  assert hashlib.sha256(vocabulary).hexdigest()[:16] == vocabulary_digest
  for split, (records_digest, stats_digest) in split_digests.items():
    assert _records_digest(str(tmp_path / "data"), split) == records_digest, split
    assert _stats_digest(metadata, split) == stats_digest, split


@pytest.mark.slow
def test_folder_and_tarball_give_byte_identical_shards(tmp_path, aclimdb_tarball, aclimdb_dir):
  """Shard membership and order depend on the seed and review names, not on reading order."""
  prepare.prepare(sources.read(aclimdb_tarball), str(tmp_path / "a"), SMALL)
  prepare.prepare(sources.read(aclimdb_dir), str(tmp_path / "b"), SMALL)
  shards = sorted(p.name for p in (tmp_path / "a").glob("*.tfrecord"))
  assert len(shards) == 9
  for name in shards + ["vocab.txt"]:
    assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes(), name


def test_length_percentiles_are_numpys():
  """Percentiles from the length histogram equal numpy.percentile of the lengths."""
  rng = np.random.default_rng(0)
  for size in (1, 2, 7, 1000):
    lengths = rng.integers(1, 60, size)
    histogram = collections.Counter(lengths.tolist())
    for p in (0, 50, 90, 95, 99, 100):
      assert statistics.histogram_percentile(histogram, p) == float(np.percentile(lengths, p))
