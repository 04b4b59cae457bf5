"""The model: vocabulary cap, masked pooling, presets, cuDNN eligibility."""

import keras
import numpy as np
import pytest

from trainer import config as config_lib
from trainer.data import text
from trainer.modeling import model as model_lib


def test_cap_vocabulary_maps_rare_ids_to_oov():
  """Ids at or above the vocabulary size become <unk>; padding stays 0."""
  capped = model_lib.CapVocabulary(5)(np.array([[0, 1, 4, 5, 99]], np.int32))
  assert keras.ops.convert_to_numpy(capped).tolist() == [[0, 1, 4, text.OOV_ID, text.OOV_ID]]


def test_padding_does_not_change_the_prediction():
  """Right padding is masked all the way: more zeros, same logit."""
  config = config_lib.override(config_lib.get_preset("local"), dropout=0.0)
  model = model_lib.build_model(config)
  short = np.array([[5, 6, 7]], np.int32)
  padded = np.array([[5, 6, 7, 0, 0, 0, 0]], np.int32)
  np.testing.assert_allclose(model(short), model(padded), rtol=1e-5)


@pytest.mark.parametrize("name", config_lib.preset_names())
def test_every_preset_builds_a_cudnn_eligible_model(name):
  """Each preset is valid (a section with a bad value cannot be made) and stays cuDNN-eligible."""
  config = config_lib.get_preset(name)
  model = model_lib.build_model(config_lib.override(config, vocab_size=50))
  assert model_lib.cudnn_ineligibility(model) == []
  assert model.output.shape[-1] == 1 and model.output.dtype == "float32"
  expected_layers = len(config.model.rnn_units)
  assert sum(isinstance(l, keras.layers.Bidirectional) for l in model.layers) == expected_layers


def test_presets_match_their_sources():
  """keras_example and seed_notebook are the models they are named after."""
  keras_example = config_lib.get_preset("keras_example")
  assert (keras_example.data.vocab_size, keras_example.input.max_length,
          keras_example.model.embedding_dim, keras_example.model.rnn_units,
          keras_example.training.global_batch_size, keras_example.training.epochs) == (
              20000, 200, 128, (64, 64), 32, 2)
  notebook = config_lib.get_preset("seed_notebook")
  assert (notebook.data.vocab_size, notebook.input.max_length, notebook.model.embedding_dim,
          notebook.model.rnn_units, notebook.model.dropout, notebook.training.global_batch_size,
          notebook.training.epochs) == (5000, 500, 50, (128,), 0.5, 128, 3)


def test_gru_and_ineligible_settings_are_reported():
  """GRU builds eligible; a recurrent dropout is named as the reason it is not."""
  gru = model_lib.build_model(config_lib.override(config_lib.get_preset("local"), rnn="gru"))
  assert model_lib.cudnn_ineligibility(gru) == []
  tokens = keras.Input((None,), dtype="int32")
  x = keras.layers.Embedding(10, 4, mask_zero=True)(tokens)
  x = keras.layers.Bidirectional(keras.layers.LSTM(4, recurrent_dropout=0.1))(x)
  reasons = model_lib.cudnn_ineligibility(keras.Model(tokens, keras.layers.Dense(1)(x)))
  assert reasons and all("recurrent_dropout > 0" in reason for reason in reasons)


@pytest.mark.parametrize("field, value, message", [
    ("rnn", "transformer", "rnn='transformer': choose one of"),
    ("rnn_units", (), "rnn_units=()"),
    ("dropout", 1.0, "dropout=1.0"),
    ("global_batch_size", 0, "global_batch_size=0"),
])
def test_config_check_names_the_bad_field(field, value, message):
  """A config that cannot work cannot be made: refused by field name."""
  with pytest.raises(ValueError, match=message.replace("(", r"\(").replace(")", r"\)")):
    config_lib.override(config_lib.Config(), **{field: value})
