"""The tokenizer against an independent reference, and the vocabulary."""

import re
import unicodedata

import pytest
import tensorflow as tf

from trainer.data import text

REAL_LOOKING_REVIEWS = [
    b"I didn't like it.<br /><br />The ending... well, 3/10!",
    b"This is the BEST film of 2006 -- Oscar-worthy acting<br/>and a $5 ticket.",
    "Ça c'est un FILM génial — 10/10 😀😀 «Très» bien.".encode(),
    "ΣΑΣ ΚΑΛΗΣΠΈΡΑ; İstanbul ß Straße".encode(),
    "nai\u0308ve cafe\u0301 (decomposed accents)".encode(),
    "soft\u00adhyphen, zero\u200bwidth, non\u00a0breaking\u2003em space".encode(),
    "tabs\tnew\nlines\r\nand\x0bvertical\x0cfeeds".encode(),
    "家族で見ました。とても良かった！ 映画".encode(),
    "👨\u200d👩\u200d👧 family 👍🏽".encode(),
    "مراجعة فيلم رائع 123 ١٢٣".encode(),
    b"<i>HTML</i> &amp; entities, <BR /> upper-case BR, <br> bare, \"quoted\" (parens) [x]",
    b"caf\xe9 is latin-1, \xff\xfe not utf-8, truncated \xe2\x82",
    b"",
    b"   \t\n  ",
    b"<br /><br />",
]


def reference_tokenize(raw):
  """The tokenizer's specification in plain Python, character by character."""
  normalized = raw.decode("utf-8", "replace").lower()
  normalized = re.sub(r"<br[ \t\n\f\r]*/?>", " ", normalized)  # RE2's \s: no \v, no Unicode.
  tokens, word = [], ""
  for character in normalized:
    category = unicodedata.category(character)
    if category == "Cf":
      continue
    if category[0] in "LMN":
      word += character
      continue
    if word:
      tokens.append(word)
      word = ""
    if category[0] != "Z" and category != "Cc":
      tokens.append(character)
  return tokens + ([word] if word else [])


def test_tokenize_agrees_with_the_reference_on_real_looking_text():
  """The TensorFlow tokenizer splits exactly like its plain-Python specification."""
  tokens = text.tokenize(tf.constant(REAL_LOOKING_REVIEWS)).to_list()
  for raw, got in zip(REAL_LOOKING_REVIEWS, tokens):
    assert [t.decode("utf-8") for t in got] == reference_tokenize(raw), raw


def test_tokenize_examples():
  """Spot checks of the rules: markup, case, punctuation, apostrophes."""
  tokens = text.tokenize(tf.constant([b"I didn't LIKE it!<br />Really..."])).to_list()[0]
  assert tokens == [b"i", b"didn", b"'", b"t", b"like", b"it", b"!", b"really", b".", b".", b"."]


def test_tokenize_inside_a_graph_on_a_batch_with_unknown_size():
  """The tokenizer traces with a [None] string signature, as a serving graph needs."""
  tokenize = tf.function(text.tokenize, input_signature=[tf.TensorSpec([None], tf.string)])
  eager = text.tokenize(tf.constant(REAL_LOOKING_REVIEWS)).to_list()
  assert tokenize(tf.constant(REAL_LOOKING_REVIEWS)).to_list() == eager


def test_build_vocabulary_orders_by_count_then_token():
  """Reserved ids first, then descending count, ties broken by the token; capped at the size."""
  counts = {"b": 3, "a": 3, "c": 5, "d": 1}
  assert text.build_vocabulary(counts, 5) == ["<pad>", "<unk>", "c", "a", "b"]
  assert text.build_vocabulary(counts, 100) == ["<pad>", "<unk>", "c", "a", "b", "d"]


def test_encode_maps_unknown_tokens_to_oov():
  """Ids follow the vocabulary; tokens outside it get OOV_ID."""
  table = text.build_lookup_table(["<pad>", "<unk>", "good", "!"])
  ids = text.encode(tf.constant(["Good movie!", ""]), table).to_list()
  assert ids == [[2, text.OOV_ID, 3], []]


def test_vocabulary_round_trip_and_checks(tmp_path):
  """A saved vocabulary loads back unchanged; a file without the reserved tokens is refused."""
  vocabulary = ["<pad>", "<unk>", "the", "café", "😀"]
  path = str(tmp_path / "vocab.txt")
  text.save_vocabulary(vocabulary, path)
  assert text.load_vocabulary(path) == vocabulary
  (tmp_path / "bad.txt").write_text("the\nmovie\n")
  with pytest.raises(ValueError, match="must start with"):
    text.load_vocabulary(str(tmp_path / "bad.txt"))
