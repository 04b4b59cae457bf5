"""The one tokenizer and vocabulary: used by `prepare` and inside the exported serving graph.

Everything here is TensorFlow ops on string tensors, so the ids written to the TFRecords and
the ids an exported model computes from raw text come from the very same code.

Tokenization (version `TOKENIZER_VERSION`), in order:
  1. decode UTF-8, replacing invalid bytes with U+FFFD;
  2. lowercase (full Unicode case mapping);
  3. replace the `<br />` line-break markup of IMDB reviews with a space;
  4. delete invisible format characters (Unicode category Cf: soft hyphens, zero-width joiners);
  5. split into words (runs of letters, combining marks and digits) and single punctuation or
     symbol characters (`"didn't!"` -> `didn ' t !`); spaces and control characters separate.
"""

import tensorflow as tf

from trainer import storage

TOKENIZER_VERSION = 1
PAD_ID = 0
OOV_ID = 1
PAD_TOKEN = "<pad>"
OOV_TOKEN = "<unk>"
RESERVED_TOKENS = (PAD_TOKEN, OOV_TOKEN)

_LINE_BREAK = r"<br\s*/?>"
_FORMAT_CHARACTER = r"\p{Cf}"
_PUNCTUATION_OR_SYMBOL = r"[^\p{L}\p{M}\p{N}\p{Z}\p{Cc}]"
_SEPARATOR = r"[\p{Z}\p{Cc}]+"


def tokenize(texts):
  """Splits raw reviews into tokens.

  Args:
    texts: string[batch], raw UTF-8 (invalid bytes are replaced, never an error).

  Returns:
    RaggedTensor string[batch, (tokens)].
  """
  return tf.strings.split(normalize(texts))


def normalize(texts):
  """Rewrites raw reviews as their tokens joined by spaces: all of `tokenize` but the split.

  Args:
    texts: string[batch], raw UTF-8.

  Returns:
    string[batch]; `tf.strings.split` of it is `tokenize(texts)`.
  """
  texts = tf.strings.unicode_transcode(
      texts, input_encoding="UTF-8", output_encoding="UTF-8", errors="replace",
      replacement_char=0xFFFD)
  texts = tf.strings.lower(texts, encoding="utf-8")
  texts = tf.strings.regex_replace(texts, _LINE_BREAK, " ")
  texts = tf.strings.regex_replace(texts, _FORMAT_CHARACTER, "")
  texts = tf.strings.regex_replace(texts, _PUNCTUATION_OR_SYMBOL, r" \0 ")
  return tf.strings.regex_replace(texts, _SEPARATOR, " ")


def build_lookup_table(vocabulary):
  """Builds the token -> id table; unknown tokens map to `OOV_ID`.

  Args:
    vocabulary: list of tokens, index = id, starting with `RESERVED_TOKENS`.

  Returns:
    A `tf.lookup.StaticHashTable` from string tokens to int64 ids.
  """
  check_vocabulary(vocabulary)
  words = tf.constant(vocabulary[len(RESERVED_TOKENS):], tf.string)
  ids = tf.range(len(RESERVED_TOKENS), len(vocabulary), dtype=tf.int64)
  return tf.lookup.StaticHashTable(
      tf.lookup.KeyValueTensorInitializer(words, ids), default_value=OOV_ID)


def lookup_tokens(tokens, table):
  """Maps tokens to ids.

  Args:
    tokens: RaggedTensor string[batch, (tokens)], from `tokenize`.
    table: the table from `build_lookup_table`.

  Returns:
    RaggedTensor int64[batch, (tokens)].
  """
  return tf.ragged.map_flat_values(table.lookup, tokens)


def encode(texts, table):
  """Maps raw reviews to token ids, exactly as in the prepared TFRecords.

  Args:
    texts: string[batch], raw reviews.
    table: the table from `build_lookup_table`.

  Returns:
    RaggedTensor int64[batch, (tokens)].
  """
  return lookup_tokens(tokenize(texts), table)


def truncate(tokens, max_length, keep):
  """Keeps at most `max_length` tokens of each row, from the `keep` end ("first" or "last").

  Args:
    tokens: RaggedTensor [batch, (time)].

  Returns:
    RaggedTensor [batch, (at most max_length)].
  """
  return tokens[:, -max_length:] if keep == "last" else tokens[:, :max_length]


def build_vocabulary(token_counts, vocab_size):
  """Picks the most frequent tokens after the reserved ones.

  Args:
    token_counts: dict token -> count, from the training split only.
    vocab_size: total number of ids, reserved ones included (`config.DataConfig` checks it).

  Returns:
    List of tokens, index = id; ties in count are broken by the token, so it is deterministic.
  """
  ranked = sorted(token_counts.items(), key=lambda item: (-item[1], item[0]))
  return list(RESERVED_TOKENS) + [token for token, _ in ranked[:vocab_size - len(RESERVED_TOKENS)]]


def check_vocabulary(vocabulary):
  """Raises ValueError unless `vocabulary` starts with the reserved tokens and has no repeats."""
  if tuple(vocabulary[:len(RESERVED_TOKENS)]) != RESERVED_TOKENS:
    raise ValueError(f"A vocabulary must start with {RESERVED_TOKENS}, got "
                     f"{vocabulary[:len(RESERVED_TOKENS)]}.")
  if len(set(vocabulary)) != len(vocabulary):
    raise ValueError("The vocabulary has repeated tokens.")


def save_vocabulary(vocabulary, path):
  """Writes one token per line (line i = id i), atomically."""
  storage.write_text_atomically(path, "".join(f"{token}\n" for token in vocabulary))


def load_vocabulary(path):
  """Reads a vocabulary written by `save_vocabulary`."""
  with tf.io.gfile.GFile(path, "rb") as f:
    vocabulary = f.read().decode("utf-8").split("\n")[:-1]
  check_vocabulary(vocabulary)
  return vocabulary
