"""Each IMDB source on a fixture in its format, and each bad input."""

import dataclasses
import functools
import hashlib
import http.server
import os
import socket
import threading
from unittest import mock

import pytest

from trainer.data import sources
from trainer.data import survey
from trainer.errors import UserInputError
from trainer.testing import synthetic_imdb


def test_tarball_reads_every_labelled_review_with_its_movie(aclimdb_tarball, corpus_files):
  """All labelled reviews come back with label, rating and the movie from urls_*.txt."""
  corpus = sources.read(aclimdb_tarball)
  assert len(corpus.reviews) == 4 * 24  # unsup/ reviews are left out.
  review = next(r for r in corpus.reviews if r.name.startswith("train/pos/5_"))
  assert review.label == 1 and 7 <= review.rating <= 10 and review.split == "train"
  assert review.movie == "tt1000001"  # Line 5 of urls_pos.txt.
  assert review.text == corpus_files[f"aclImdb/{review.name}"]
  assert corpus.source["sha256"] == hashlib.sha256(open(aclimdb_tarball, "rb").read()).hexdigest()


def test_directory_and_its_parent_read_the_same_as_the_tarball(aclimdb_tarball, aclimdb_dir):
  """The extracted folder (given as aclImdb/ or its parent) holds the same reviews."""
  from_tarball = survey.survey(sources.read(aclimdb_tarball).reviews)
  assert survey.survey(sources.read(aclimdb_dir).reviews) == from_tarball
  assert survey.survey(sources.read(os.path.dirname(aclimdb_dir)).reviews) == from_tarball


def test_the_tarball_surveyed_while_reading_equals_a_survey_of_its_reviews(aclimdb_tarball,
                                                                          aclimdb_dir):
  """The survey made in the layout pass (movies added last) is that of the reviews read."""
  corpus = sources.read(aclimdb_tarball)
  assert corpus.survey == survey.survey(list(corpus.reviews))
  assert survey.survey_corpus(corpus) is corpus.survey
  folder = sources.read(aclimdb_dir)  # Its layout pass reads no texts: surveyed by a pass.
  assert folder.survey is None and survey.survey_corpus(folder) == corpus.survey


def test_the_survey_checksum_tells_texts_and_movies_apart(aclimdb_tarball):
  """Changing one review's text or movie changes the checksum; the order does not."""
  reviews = list(sources.read(aclimdb_tarball).reviews)
  checksum = survey.survey(reviews).content_sha256
  assert survey.survey(reviews[::-1]).content_sha256 == checksum
  for change in ({"text": reviews[0].text + b"!"}, {"movie": "tt0000001"}):
    changed = [dataclasses.replace(reviews[0], **change)] + reviews[1:]
    assert survey.survey(changed).content_sha256 != checksum, change


def _prepare_tfds_fixture(data_dir, tarball):
  """Builds TFDS imdb_reviews in `data_dir` with TFDS's own builder, from a local tarball."""
  import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top
  builder = tfds.builder(sources.TFDS_NAME, data_dir=data_dir)
  with mock.patch.object(tfds.download.DownloadManager, "download", lambda self, url: tarball):
    builder.download_and_prepare()


def test_tfds_reads_a_prepared_data_dir(tmp_path, aclimdb_tarball):
  """imdb_reviews/plain_text in a TFDS data dir: both labelled splits, no movies, no network."""
  _prepare_tfds_fixture(str(tmp_path / "tfds"), aclimdb_tarball)
  with socket.socket() as listener:  # Stands for the download host: it must get no connection.
    listener.bind(("127.0.0.1", 0))
    listener.listen()
    listener.setblocking(False)
    corpus = sources.read("tfds", tfds_data_dir=str(tmp_path / "tfds"),
                          download_url=f"http://127.0.0.1:{listener.getsockname()[1]}/x.tar.gz")
    with pytest.raises(BlockingIOError):
      listener.accept()
  expected = sources.read(aclimdb_tarball).reviews
  assert sorted((r.split, r.label, r.text.strip()) for r in corpus.reviews) == sorted(
      (r.split, r.label, r.text.strip()) for r in expected)
  assert all(r.movie is None for r in corpus.reviews)
  assert corpus.source["kind"] == "tfds"


def test_tfds_offline_without_data_says_what_to_pass(tmp_path):
  """No prepared imdb_reviews and no network: a clear error, no download attempt."""
  with socket.socket() as closed:
    closed.bind(("127.0.0.1", 0))  # Bound, not listening: connections are refused.
    offline_url = f"http://127.0.0.1:{closed.getsockname()[1]}/x.tar.gz"
    with pytest.raises(UserInputError, match="offline.*--tfds_data_dir"):
      sources.read("tfds", tfds_data_dir=str(tmp_path / "empty"), download_url=offline_url)


def test_is_online_checks_a_real_connection():
  """A listening loopback port is reachable; a closed one is not."""
  with socket.socket() as listener:
    listener.bind(("127.0.0.1", 0))
    listener.listen()
    port = listener.getsockname()[1]
    assert sources.is_online(f"http://127.0.0.1:{port}/x")
  assert not sources.is_online(f"http://127.0.0.1:{port}/x", 2)


@pytest.fixture
def served_tarball(aclimdb_tarball):
  """Serves the fixture tarball over HTTP on 127.0.0.1; yields its URL."""
  handler = functools.partial(http.server.SimpleHTTPRequestHandler,
                              directory=os.path.dirname(aclimdb_tarball))
  handler.log_message = lambda *args: None
  server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
  thread = threading.Thread(target=server.serve_forever, daemon=True)
  thread.start()
  yield f"http://127.0.0.1:{server.server_address[1]}/{os.path.basename(aclimdb_tarball)}"
  server.shutdown()
  server.server_close()


def test_download_verifies_the_checksum_and_keeps_the_file(tmp_path, served_tarball,
                                                           aclimdb_tarball):
  """The download is checked, kept under its name, and reused without the network."""
  sha256 = hashlib.sha256(open(aclimdb_tarball, "rb").read()).hexdigest()
  corpus = sources.read("", download_dir=str(tmp_path / "cache"), download_url=served_tarball,
                        download_sha256=sha256)
  assert len(corpus.reviews) == 96
  assert os.listdir(tmp_path / "cache") == ["aclImdb_v1.tar.gz"]
  with mock.patch("urllib.request.urlopen", side_effect=AssertionError("downloaded again")):
    sources.download(served_tarball, sha256, str(tmp_path / "cache"))


def test_download_with_a_wrong_checksum_keeps_nothing(tmp_path, served_tarball):
  """A file that does not match the checksum is refused and deleted."""
  with pytest.raises(UserInputError, match="sha256 .* not the expected"):
    sources.download(served_tarball, "0" * 64, str(tmp_path / "cache"))
  assert os.listdir(tmp_path / "cache") == []


def test_download_offline_says_how_to_pass_a_local_copy(tmp_path):
  """A refused connection ends with an error naming --input."""
  with socket.socket() as unused:
    unused.bind(("127.0.0.1", 0))
    port = unused.getsockname()[1]
  with pytest.raises(UserInputError, match="offline.*--input=/path/to/aclImdb_v1.tar.gz"):
    sources.download(f"http://127.0.0.1:{port}/aclImdb_v1.tar.gz", "0" * 64,
                     str(tmp_path / "cache"), timeout_seconds=5)


def test_missing_path(tmp_path):
  """A path that does not exist is named, with what to give instead."""
  with pytest.raises(UserInputError, match="nowhere.tar.gz does not exist"):
    sources.read(str(tmp_path / "nowhere.tar.gz"))


def test_truncated_tarball(tmp_path, aclimdb_tarball):
  """A tarball cut short is reported as truncated, by name."""
  content = open(aclimdb_tarball, "rb").read()
  truncated = tmp_path / "cut.tar.gz"
  truncated.write_bytes(content[:len(content) // 2])
  with pytest.raises(UserInputError, match="cut.tar.gz is not a readable tarball, or it is trunc"):
    sources.read(str(truncated))


def test_a_file_that_is_not_a_tarball(tmp_path):
  """Any other file is reported by name."""
  (tmp_path / "notes.txt").write_text("not an archive")
  with pytest.raises(UserInputError, match="notes.txt is not a readable tarball"):
    sources.read(str(tmp_path / "notes.txt"))


def test_a_tarball_that_is_not_aclimdb(tmp_path):
  """A valid tarball of other files names the missing folders and the expected layout."""
  path = synthetic_imdb.write_tarball({"photos/cat.jpg": b"\xff\xd8"}, str(tmp_path / "o.tar.gz"))
  with pytest.raises(UserInputError, match=r"o.tar.gz is not the aclImdb dataset: no reviews "
                     r"under aclImdb/train/neg/"):
    sources.read(path)


def test_a_folder_without_pos_or_neg(aclimdb_dir):
  """A split folder lacking pos/ is named."""
  os.rename(os.path.join(aclimdb_dir, "test", "pos"), os.path.join(aclimdb_dir, "test", "good"))
  with pytest.raises(UserInputError, match=r"aclImdb/test has no pos/ folder"):
    sources.read(aclimdb_dir)


def test_a_folder_that_is_not_aclimdb(tmp_path):
  """A folder without train/ and test/ says what layout is expected."""
  with pytest.raises(UserInputError, match="has no train/ and test/ folders"):
    sources.read(str(tmp_path))


def test_missing_urls_files_fall_back_to_no_movie(aclimdb_dir):
  """Without urls_*.txt reviews have no movie (validation then groups them by review)."""
  os.remove(os.path.join(aclimdb_dir, "train", "urls_pos.txt"))
  corpus = sources.read(aclimdb_dir)
  assert all(r.movie is None for r in corpus.reviews if r.split == "train" and r.label == 1)
  assert all(r.movie for r in corpus.reviews if r.split == "train" and r.label == 0)

