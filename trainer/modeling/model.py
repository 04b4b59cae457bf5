"""The BiGRU or BiLSTM classifier: token ids -> one float32 logit per review.

It knows nothing of devices, strategies or precision: callers set the Keras dtype policy and
build it inside a strategy scope.
"""

import keras
from keras import layers
from keras import ops

from trainer.data import text
from trainer.modeling import noise


class CapVocabulary(layers.Layer):
  """Maps ids >= `vocab_size` to the out-of-vocabulary id (the vocabulary is frequency-ranked)."""

  def __init__(self, vocab_size, **kwargs):
    """Keeps ids below `vocab_size`."""
    super().__init__(**kwargs)
    self.vocab_size = vocab_size

  def call(self, ids):
    """ids: int32[batch, time] -> int32[batch, time]."""
    return ops.where(ids >= self.vocab_size, ops.full_like(ids, text.OOV_ID), ids)

  def get_config(self):
    """Keras serialization."""
    return {**super().get_config(), "vocab_size": self.vocab_size}


class MaskedMaxMeanPooling(layers.Layer):
  """Concatenates the max and the mean over the unmasked time steps."""

  def __init__(self, **kwargs):
    """A layer that consumes the mask."""
    super().__init__(**kwargs)
    self.supports_masking = True

  def call(self, sequences, mask=None):
    """sequences: float[batch, time, features], mask: bool[batch, time] -> [batch, 2*features]."""
    if mask is None:
      return ops.concatenate([ops.max(sequences, axis=1), ops.mean(sequences, axis=1)], axis=-1)
    valid = ops.expand_dims(ops.cast(mask, sequences.dtype), -1)
    lowest = ops.cast(-65000.0, sequences.dtype)  # Below any tanh output; fits float16.
    maximum = ops.max(ops.where(valid > 0, sequences, lowest), axis=1)
    mean = ops.sum(sequences * valid, axis=1) / ops.maximum(ops.sum(valid, axis=1), 1.0)
    return ops.concatenate([maximum, mean], axis=-1)

  def compute_mask(self, inputs, mask=None):
    """The pooled output has no time axis, so no mask."""
    return None


def _recurrent_layer(config, units, return_sequences):
  """One LSTM or GRU with the arguments that keep it eligible for the fused cuDNN kernel."""
  if config.rnn == "gru":
    return layers.GRU(units, return_sequences=return_sequences, reset_after=True)
  return layers.LSTM(units, return_sequences=return_sequences)


def build_model(config):
  """Builds Embedding(mask_zero) -> Bidirectional RNN layers -> pooling -> Dropout -> Dense.

  Args:
    config: a `config.Config`: its model section, vocabulary size and seed.

  Returns:
    keras.Model from tokens int32[batch, time] (right-padded with 0) to logits float32[batch, 1].
  """
  vocab_size, seed, max_length = (config.data.vocab_size, config.training.seed,
                                  config.input.max_length)
  config = config.model
  tokens = keras.Input(shape=(None,), dtype="int32", name="tokens")
  ids = CapVocabulary(vocab_size, name="cap_vocabulary")(tokens)
  x = layers.Embedding(vocab_size, config.embedding_dim, mask_zero=True,
                       name="embedding")(ids)
  if config.embedding_dropout:
    x = noise.ExampleDropout(config.embedding_dropout, "channel", seed=seed,
                             name="embedding_dropout")(x)
  if config.word_dropout:
    x = noise.ExampleDropout(config.word_dropout, "word", seed=seed + 2, max_length=max_length,
                             name="word_dropout")(x)
  for index, units in enumerate(config.rnn_units):
    is_last = index == len(config.rnn_units) - 1
    return_sequences = not is_last or config.pooling == "max_mean"
    x = layers.Bidirectional(_recurrent_layer(config, units, return_sequences),
                             name=f"bidirectional_{config.rnn}_{index}")(x)
  if config.pooling == "max_mean":
    x = MaskedMaxMeanPooling(name="max_mean_pooling")(x)
  if config.dropout:
    x = noise.ExampleDropout(config.dropout, "unit", seed=seed + 1, name="dropout")(x)
  logits = layers.Dense(1, dtype="float32", name="logits")(x)  # float32 even in mixed precision.
  return keras.Model(tokens, logits, name=f"bi{config.rnn}_classifier")


def cudnn_ineligibility(model):
  """Why the model's recurrent layers cannot use the fused cuDNN kernel on GPU.

  Checks what Keras requires: tanh / sigmoid activations, no recurrent dropout, no unrolling,
  biases, and for GRU reset_after (the input must also be right-padded, as ours is).

  Returns:
    List of reasons, empty when every recurrent layer is eligible.
  """
  reasons = []
  for layer in model.layers:
    if not isinstance(layer, layers.Bidirectional):
      continue
    for cell_layer in (layer.forward_layer, layer.backward_layer):
      cell = cell_layer.cell
      problems = {
          "activation is not tanh": cell.activation is not keras.activations.tanh,
          "recurrent_activation is not sigmoid":
              cell.recurrent_activation is not keras.activations.sigmoid,
          "recurrent_dropout > 0": cell.recurrent_dropout > 0,
          "unroll=True": cell_layer.unroll,
          "use_bias=False": not cell.use_bias,
          "GRU reset_after=False": isinstance(cell, layers.GRUCell) and not cell.reset_after,
      }
      reasons += [f"{cell_layer.name}: {problem}" for problem, bad in problems.items() if bad]
  return reasons
