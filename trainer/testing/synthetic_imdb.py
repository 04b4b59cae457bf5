"""Generated reviews in the aclImdb layout, for tests and benchmarks that lack the real data.

The reviews look like IMDB's: `<br />` line breaks, punctuation, accents and emoji, lengths with
IMDB's long tail, several reviews per movie (named in urls_{pos,neg}.txt). Positive and negative
reviews use different sentiment words, so a model can learn to tell them apart.
"""

import io
import os
import tarfile

import numpy as np

_POSITIVE = ("great", "wonderful", "brilliant", "loved", "superb", "moving", "best", "fun")
_NEGATIVE = ("awful", "boring", "worst", "terrible", "waste", "dull", "bad", "hated")
_NEUTRAL = ("the", "movie", "film", "a", "plot", "actor", "scene", "story", "and", "it", "was",
            "of", "director", "café", "naïve", "ending", "music", "really", "character", "i")
_PUNCTUATION = (".", ",", "!", "?", "...", " :)", " 😀", " -", "'s")


def _review_text(rng, label, median_words):
  """One review: neutral words sprinkled with the label's sentiment words and punctuation."""
  length = max(1, int(rng.lognormal(np.log(median_words), 0.75)))
  sentiment = _POSITIVE if label else _NEGATIVE
  words = []
  for _ in range(length):
    word = rng.choice(sentiment) if rng.random() < 0.15 else rng.choice(_NEUTRAL)
    if rng.random() < 0.1:
      word = word.capitalize()
    if rng.random() < 0.12:
      word += rng.choice(_PUNCTUATION)
    if rng.random() < 0.02:
      word += "<br /><br />"
    words.append(word)
  return " ".join(words)


def generate(reviews_per_folder=20, reviews_per_movie=4, median_words=40, seed=0):
  """Generates the files of an aclImdb tree, with a few unlabelled train/unsup reviews as upstream.

  Returns:
    Dict relative path (e.g. "aclImdb/train/pos/3_8.txt") -> bytes.
  """
  rng = np.random.default_rng(seed)
  files = {}
  for split_index, split in enumerate(("train", "test")):
    for label, folder in ((1, "pos"), (0, "neg")):
      urls = []
      for review_id in range(reviews_per_folder):
        rating = int(rng.integers(7, 11) if label else rng.integers(1, 5))
        text = _review_text(rng, label, median_words)
        files[f"aclImdb/{split}/{folder}/{review_id}_{rating}.txt"] = text.encode("utf-8")
        movie = f"tt{split_index + 1}{review_id // reviews_per_movie:06d}"  # Shared by pos and neg.
        urls.append(f"http://www.imdb.com/title/{movie}/usercomments")
      files[f"aclImdb/{split}/urls_{folder}.txt"] = ("\n".join(urls) + "\n").encode("utf-8")
  for review_id in range(2):
    files[f"aclImdb/train/unsup/{review_id}_0.txt"] = _review_text(rng, 1, median_words).encode()
  files["aclImdb/README"] = b"Generated reviews in the layout of the Large Movie Review Dataset.\n"
  return files


def write_directory(files, root):
  """Writes generated files under `root`; returns the path of the aclImdb folder."""
  for relative_path, content in files.items():
    path = os.path.join(root, relative_path)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "wb") as f:
      f.write(content)
  return os.path.join(root, "aclImdb")


def write_tarball(files, path):
  """Writes generated files as a .tar.gz like aclImdb_v1.tar.gz; returns `path`."""
  with tarfile.open(path, "w:gz") as archive:
    for relative_path, content in sorted(files.items()):
      info = tarfile.TarInfo(relative_path)
      info.size = len(content)
      archive.addfile(info, io.BytesIO(content))
  return path
