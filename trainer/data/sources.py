"""Readers for the IMDB sources: the aclImdb tarball or folder, TFDS `imdb_reviews`, the download.

Each reader returns a `Corpus`: the labelled reviews of the official train and test splits, each
with the movie it is about when the source says so, and a description of where it came from.
The tarball and the folder are streamed: `Corpus.reviews` reads the source again at each pass,
so memory does not grow with the number of reviews (a first pass reads the urls files and checks
the layout; the tarball's also surveys the reviews, see `survey`). TFDS `imdb_reviews` is held
in memory.
"""

import collections
import dataclasses
import hashlib
import os
import re
import socket
import sys
import tarfile
import urllib.error
import urllib.parse
import urllib.request
import zlib

from absl import logging
import tensorflow as tf

from trainer.config import option
from trainer.config import Options
from trainer.data import survey as survey_lib
from trainer.errors import UserInputError
from trainer import storage

CANONICAL_URL = "https://ai.stanford.edu/~amaas/data/sentiment/aclImdb_v1.tar.gz"
# The upstream tarball's sha256, as registered by tensorflow_datasets for imdb_reviews.
CANONICAL_SHA256 = "c40f74a18d3b61f90feba1e17730e0d38e8b97c05fde7008942e91923d1658fe"
TFDS_NAME = "imdb_reviews/plain_text"
SPLITS = ("train", "test")
LABELS = ("neg", "pos")

_REVIEW_PATH = re.compile(r"(?:^|/)aclImdb/(train|test)/(pos|neg)/(\d+)_(\d+)\.txt$")
_URLS_PATH = re.compile(r"(?:^|/)aclImdb/(train|test)/urls_(pos|neg)\.txt$")
_MOVIE_ID = re.compile(r"/title/(tt\d+)")
_LAYOUT = "aclImdb/{train,test}/{pos,neg}/<id>_<rating>.txt"
_HOW_TO_PASS_A_LOCAL_COPY = (
    "pass a local copy instead: --input=/path/to/aclImdb_v1.tar.gz (or the extracted aclImdb "
    "folder), or --input=tfds with --tfds_data_dir=<a prepared TFDS data dir>")


@dataclasses.dataclass(frozen=True)
class Review:
  """One labelled review as read from a source."""
  split: str  # "train" or "test": the official split it comes from.
  label: int  # 0 = negative, 1 = positive.
  text: bytes  # Raw file content, not yet decoded.
  name: str  # Where it came from, e.g. "train/pos/123_9.txt".
  movie: str | None = None  # IMDB title id such as "tt0453418", when the source names it.
  rating: int = 0  # Star rating 1-10, 0 when unknown.


@dataclasses.dataclass(frozen=True)
class Corpus:
  """All labelled reviews of a source and what identifies the source."""
  reviews: collections.abc.Collection  # Of Review: a list, or a `ReviewStream` (re-iterable).
  source: dict  # kind, location and, for files, their sha256.
  survey: survey_lib.Survey | None = None  # When the reader surveyed the reviews while reading.


class ReviewStream:
  """The reviews of a tarball or folder, read again at every iteration; picklable for Beam."""

  def __init__(self, read_files, location, count, movies):
    """Streams the reviews of `read_files(location)`, each with its movie from `movies`.

    Args:
      read_files: module-level function of a location, yielding (aclImdb path, content) of
        each review file.
      location: the tarball path or the aclImdb folder.
      count: how many reviews it yields.
      movies: dict (split, label) -> list, line i = movie of review id i (urls_*.txt).
    """
    self._read_files = read_files
    self._location = location
    self._count = count
    # One string per urls file: pickled (to Beam's workers) at the speed of a copy.
    self._movies = {key: "\n".join(ids) for key, ids in movies.items()}

  def __len__(self):
    """The number of reviews."""
    return self._count

  def __iter__(self):
    """Reads the source and yields its Reviews, each with its movie when known."""
    movie_lists = {key: ids.split("\n") for key, ids in self._movies.items()}
    for name, text in self._read_files(self._location):
      yield _review_from_path(name, text, movie_lists)


def sha256_of_file(path):
  """Returns the hex sha256 of a (gfile) file, read in 1 MiB blocks."""
  digest = hashlib.sha256()
  with tf.io.gfile.GFile(path, "rb") as f:
    while block := f.read(1 << 20):
      digest.update(block)
  return digest.hexdigest()


@dataclasses.dataclass(frozen=True)
class SourceOptions(Options):
  """Where the IMDB reviews come from (the flags of every command that prepares data)."""
  input: str = option("", "aclImdb .tar.gz (local or gs://), extracted aclImdb folder, 'tfds', "
                      "or empty to download the canonical tarball.")
  tfds_data_dir: str | None = option(None, "TFDS data dir for --input=tfds (TFDS default if "
                                     "unset).")
  download_dir: str | None = option(None, "Where the downloaded tarball is kept (default "
                                    "~/.cache/imdb_bilstm).")
  download_url: str = option(CANONICAL_URL, "URL of the aclImdb tarball.")
  download_sha256: str = option(CANONICAL_SHA256, "Expected sha256 of the file at "
                                "--download_url.")

  def read(self):
    """Reads the corpus these options name."""
    return read(self.input, tfds_data_dir=self.tfds_data_dir, download_dir=self.download_dir,
                download_url=self.download_url, download_sha256=self.download_sha256)


def read(input_path, tfds_data_dir=None, download_dir=None, download_url=CANONICAL_URL,
         download_sha256=CANONICAL_SHA256):
  """Reads the corpus named by `--input`: a tarball, a folder, "tfds", or "" to download."""
  if not input_path:
    tarball = download(download_url, download_sha256, download_dir)
    return read_tarball(tarball)
  if input_path == "tfds":
    return read_tfds(tfds_data_dir, download_url)
  if not tf.io.gfile.exists(input_path):
    raise UserInputError(f"--input={input_path} does not exist. Give the aclImdb .tar.gz, the "
                         "extracted aclImdb folder, 'tfds', or nothing to download the dataset.")
  if tf.io.gfile.isdir(input_path):
    return read_directory(input_path)
  return read_tarball(input_path)


# --- aclImdb layout: shared by the tarball and the folder readers.


def _review_from_path(path, text, movie_lists=None):
  """Returns a Review for an aclImdb review path, with its movie when `movie_lists` has it.

  Args:
    path: the file's path, ending in aclImdb/<split>/<pos|neg>/<id>_<rating>.txt.
    text: its content.
    movie_lists: dict (split, label) -> movie of each review id (urls files), or None.
  """
  split, label, review_id, rating = _REVIEW_PATH.search(path).groups()
  label = LABELS.index(label)
  name = f"{split}/{LABELS[label]}/{review_id}_{rating}.txt"
  return Review(split=split, label=label, text=text, name=name, rating=int(rating),
                movie=_movie_of(movie_lists, split, label, name) if movie_lists else None)


def _movie_ids(urls_text):
  """Maps line i of a urls_{pos,neg}.txt file to the IMDB title id (or the URL itself)."""
  movies = []
  for url in urls_text.decode("utf-8", "replace").splitlines():
    match = _MOVIE_ID.search(url)
    movies.append(sys.intern(match.group(1) if match else url.strip()))  # One copy per movie.
  return movies


def _movie_of(movie_lists, split, label, name):
  """The movie of review `name` of folder (split, label): its urls file's line <id>, or None."""
  movies = movie_lists.get((split, label), ())
  review_id = int(name.rsplit("/", 1)[1].split("_")[0])
  return movies[review_id] if review_id < len(movies) else None


def _check_layout(counts, urls, where):
  """Checks that every aclImdb review folder has reviews; warns about missing urls files.

  Args:
    counts: dict (split, label) -> number of reviews found.
    urls: dict (split, label) -> movie ids, for the urls files found.
    where: the source, for messages.
  """
  missing = [f"aclImdb/{split}/{LABELS[label]}/" for split in SPLITS
             for label in range(len(LABELS)) if not counts.get((split, label))]
  if missing:
    raise UserInputError(
        f"{where} is not the aclImdb dataset: no reviews under {', '.join(missing)} (expected "
        f"{_LAYOUT}). Point --input at the aclImdb_v1.tar.gz tarball or its extracted folder.")
  without_urls = sorted(f"aclImdb/{split}/urls_{LABELS[label]}.txt" for split in SPLITS
                        for label in range(len(LABELS)) if (split, label) not in urls)
  if without_urls:
    logging.warning("%s has no %s: the reviews they cover cannot be grouped by movie, so the "
                    "validation split groups them by review.", where, ", ".join(without_urls))


def _urls_key(path):
  """Returns (split, label) for an aclImdb urls file path, or None."""
  match = _URLS_PATH.search(path)
  return (match.group(1), LABELS.index(match.group(2))) if match else None


def _tar_files(path, wanted):
  """Yields (member name, content) of the tarball's files whose name `wanted` accepts.

  Raises:
    UserInputError: when the file is not a readable tarball, or is truncated.
  """
  try:
    with tf.io.gfile.GFile(path, "rb") as raw, tarfile.open(fileobj=raw, mode="r|*") as archive:
      for member in archive:
        if member.isfile() and wanted(member.name):
          yield member.name, archive.extractfile(member).read()
  except (tarfile.TarError, EOFError, zlib.error, OSError) as e:
    raise UserInputError(
        f"{path} is not a readable tarball, or it is truncated ({type(e).__name__}: {e}). "
        f"Download aclImdb_v1.tar.gz again (sha256 {CANONICAL_SHA256}) or pass the extracted "
        "aclImdb folder.") from e


def _tarball_review_files(path):
  """Yields (path, content) of the reviews of an aclImdb tarball, in archive order."""
  return _tar_files(path, _REVIEW_PATH.search)


def read_tarball(path):
  """Reads the aclImdb tarball (local or gs://) in one pass: urls files, layout and survey.

  The survey's movies are added after the pass: the urls files come after the reviews.
  """
  counts, urls, surveyor, names = collections.Counter(), {}, survey_lib.Surveyor(), []
  for name, content in _tar_files(path, lambda name: _REVIEW_PATH.search(name) or
                                  _urls_key(name)):
    if _urls_key(name):
      urls[_urls_key(name)] = _movie_ids(content)
    else:
      review = _review_from_path(name, content)
      counts[(review.split, review.label)] += 1
      surveyor.add_content(review)
      names.append(review.name)
  _check_layout(counts, urls, path)
  for name in names:
    split, label, _ = name.split("/")
    label = LABELS.index(label)
    surveyor.add_movie(split, name, _movie_of(urls, split, label, name))
  source = {"kind": "aclimdb_tarball", "path": path, "sha256": sha256_of_file(path)}
  return Corpus(reviews=ReviewStream(_tarball_review_files, path, sum(counts.values()), urls),
                source=source, survey=surveyor.survey())


def _find_aclimdb_root(path):
  """Returns the folder holding train/ and test/: `path` itself or its aclImdb/ child."""
  for root in (path, os.path.join(path, "aclImdb")):
    if all(os.path.isdir(os.path.join(root, split)) for split in SPLITS):
      return root
  raise UserInputError(
      f"{path} has no train/ and test/ folders (nor aclImdb/train, aclImdb/test). Point --input "
      f"at the folder extracted from aclImdb_v1.tar.gz, laid out as {_LAYOUT}.")


def _review_files(root):
  """The review files of an aclImdb folder: list of (aclImdb-relative name, path), sorted."""
  files = []
  for split in SPLITS:
    for label in LABELS:
      folder = os.path.join(root, split, label)
      if not os.path.isdir(folder):
        raise UserInputError(
            f"{os.path.join(root, split)} has no {label}/ folder. Each of train/ and test/ needs "
            f"pos/ and neg/ folders of <id>_<rating>.txt reviews ({_LAYOUT}).")
      for entry in sorted(os.scandir(folder), key=lambda e: e.name):
        name = f"aclImdb/{split}/{label}/{entry.name}"
        if _REVIEW_PATH.search(name):
          files.append((name, entry.path))
  return files


def _directory_review_files(root):
  """Yields (aclImdb-relative path, content) of the reviews of an aclImdb folder, by name."""
  for name, path in _review_files(root):
    with open(path, "rb") as f:
      yield name, f.read()


def read_directory(path):
  """Reads an extracted aclImdb folder (the aclImdb folder itself or its parent)."""
  if "://" in path:
    raise UserInputError(f"--input={path}: folders are read from local disk only; pass the "
                         "aclImdb .tar.gz instead (it is read from any gfile location).")
  root = _find_aclimdb_root(path)
  counts, urls = collections.Counter(), {}
  for name, _ in _review_files(root):
    match = _REVIEW_PATH.search(name)
    counts[(match.group(1), LABELS.index(match.group(2)))] += 1
  for split in SPLITS:
    for label_index, label in enumerate(LABELS):
      urls_path = os.path.join(root, split, f"urls_{label}.txt")
      if os.path.isfile(urls_path):
        with open(urls_path, "rb") as f:
          urls[(split, label_index)] = _movie_ids(f.read())
  _check_layout(counts, urls, root)
  source = {"kind": "aclimdb_directory", "path": os.path.abspath(root)}
  return Corpus(reviews=ReviewStream(_directory_review_files, root, sum(counts.values()), urls),
                source=source)


# --- tensorflow_datasets imdb_reviews.


def is_online(url, timeout_seconds=5.0):
  """Whether a TCP connection to the host of `url` opens within the timeout."""
  parsed = urllib.parse.urlparse(url)
  port = parsed.port or (443 if parsed.scheme == "https" else 80)
  try:
    with socket.create_connection((parsed.hostname, port), timeout=timeout_seconds):
      return True
  except OSError:
    return False


def read_tfds(data_dir=None, download_url=CANONICAL_URL):
  """Reads TFDS imdb_reviews from `data_dir`, downloading and preparing it only when online.

  Args:
    data_dir: a TFDS data dir (TFDS's default when None).
    download_url: the host TFDS downloads from must answer there, or it is not tried.
  """
  import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top  (slow import)
  builder = tfds.builder(TFDS_NAME, data_dir=data_dir)
  if not builder.is_prepared():
    if not is_online(download_url):
      raise UserInputError(
          f"TFDS {TFDS_NAME} is not prepared under {builder.data_dir} and this machine is "
          f"offline, so it cannot be downloaded. Pass --tfds_data_dir=<a data dir where it is "
          f"prepared>, or --input=/path/to/aclImdb_v1.tar.gz.")
    builder.download_and_prepare()
  reviews = []
  for split in SPLITS:
    examples = tfds.as_numpy(builder.as_dataset(split=split, shuffle_files=False))
    for index, example in enumerate(examples):
      reviews.append(Review(split=split, label=int(example["label"]), text=example["text"],
                            name=f"tfds/{split}/{index}"))
  source = {"kind": "tfds", "name": TFDS_NAME, "version": str(builder.version),
            "data_dir": builder.data_dir}
  return Corpus(reviews=reviews, source=source)


# --- The canonical download.


def default_download_dir():
  """Where the downloaded tarball is kept between runs."""
  return os.path.join(os.path.expanduser("~"), ".cache", "imdb_bilstm")


def download(url=CANONICAL_URL, sha256=CANONICAL_SHA256, download_dir=None, timeout_seconds=30):
  """Downloads the tarball once (verified by sha256) and returns its local path."""
  download_dir = download_dir or default_download_dir()
  path = os.path.join(download_dir, os.path.basename(urllib.parse.urlparse(url).path))
  if os.path.exists(path) and sha256_of_file(path) == sha256:
    logging.info("Using the tarball downloaded before: %s", path)
    return path
  os.makedirs(download_dir, exist_ok=True)
  digest = hashlib.sha256()
  logging.info("Downloading %s to %s", url, path)
  with storage.atomic_path(path) as partial:  # A failed download leaves no file behind.
    try:
      with (urllib.request.urlopen(url, timeout=timeout_seconds) as response,
            open(partial, "wb") as f):
        while block := response.read(1 << 20):
          digest.update(block)
          f.write(block)
    except (urllib.error.URLError, OSError) as e:
      raise UserInputError(f"Could not download {url} ({e}); this machine may be offline. "
                           f"{_HOW_TO_PASS_A_LOCAL_COPY}.") from e
    if digest.hexdigest() != sha256:
      raise UserInputError(f"The file downloaded from {url} has sha256 {digest.hexdigest()}, "
                           f"not the expected {sha256}: it is corrupt or not the aclImdb "
                           f"tarball. Retry, or {_HOW_TO_PASS_A_LOCAL_COPY}.")
  return path
