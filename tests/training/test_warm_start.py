"""Warm start from an export: the weights copied when the network matches, refused otherwise."""

import dataclasses
import re

import keras
import numpy as np
import pytest

from trainer import config as config_lib
from trainer.data import text
from trainer.errors import UserInputError
from trainer.modeling import model as model_lib
from trainer.serving import export
from trainer.training import warm_start

VOCABULARY = list(text.RESERVED_TOKENS) + [f"word{i}" for i in range(38)]
CONFIG = config_lib.override(config_lib.get_preset("local"), vocab_size=len(VOCABULARY))
DATASET = {"vocab_file": "vocab.txt"}  # What warm start reads of a prepared dataset's metadata.


def run_config(tmp_path, vocabulary=VOCABULARY, **fields):
  """CONFIG reading a dataset folder that holds only `vocabulary`, with `fields` replaced."""
  text.save_vocabulary(vocabulary, str(tmp_path / "vocab.txt"))
  return config_lib.override(CONFIG, data_dir=str(tmp_path), **fields)


def built(config, seed):
  """A model of `config` with the random weights of `seed`."""
  keras.utils.set_random_seed(seed)
  return model_lib.build_model(config)


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
  """(An export of a CONFIG model with seed 3's weights, as training writes it; that model)."""
  classifier = export.build_classifier(CONFIG, built(CONFIG, 3).get_weights(), VOCABULARY)
  path = export.export(classifier, str(tmp_path_factory.mktemp("exports")),
                       {"config": dataclasses.asdict(CONFIG)})
  return path, classifier.model


def test_the_exported_weights_replace_the_random_ones(tmp_path, exported):
  """Every trainable weight of the new model becomes the export's; the noise seeds stay."""
  path, source = exported
  config = run_config(tmp_path, warm_start=path)
  model = built(config, 5)
  seeds = [v.numpy() for v in model.non_trainable_variables]
  assert not np.array_equal(model.trainable_variables[0].numpy(),
                            source.trainable_variables[0].numpy())
  warm_start.initialize(model, config, DATASET)
  for ours, theirs in zip(model.trainable_variables, source.trainable_variables, strict=True):
    np.testing.assert_array_equal(ours.numpy(), theirs.numpy())
  for ours, before in zip(model.non_trainable_variables, seeds, strict=True):
    np.testing.assert_array_equal(ours.numpy(), before)


@pytest.mark.parametrize("fields,vocabulary,message", [
    ({"rnn_units": (16,)}, VOCABULARY, "rnn_units [8] in the export, [16] here"),
    ({"dropout": 0.2, "embedding_dim": 8}, VOCABULARY,
     "dropout 0.5 in the export, 0.2 here; embedding_dim 16 in the export, 8 here"),
    ({"vocab_size": 30}, VOCABULARY, "vocab_size 40 in the export, 30 here"),
    ({}, VOCABULARY[:5] + [VOCABULARY[6], VOCABULARY[5]] + VOCABULARY[7:],
     "the vocabulary differs at 2 of the first 40 ids (first at id 5: 'word3' in the export, "
     "'word4' in this run's data)"),
    ({}, VOCABULARY[:39], "the vocabulary differs at 1 of the first 40 ids (first at id 39: "
     "'word37' in the export, nothing in this run's data)"),
])
def test_another_network_is_refused_naming_the_difference(tmp_path, exported, fields, vocabulary,
                                                           message):
  """Another model config, vocabulary size or vocabulary: a UserInputError (exit 2) naming it."""
  path, _ = exported
  config = run_config(tmp_path, vocabulary, warm_start=path, **fields)
  with pytest.raises(UserInputError, match=re.escape(message)) as error:
    warm_start.initialize(built(config, 5), config, DATASET)
  assert str(error.value).startswith(f"--warm_start={path} cannot initialise this run: ")


def test_production_and_synthetic_data_are_refused_outside_their_place(tmp_path):
  """'production' means something to retrain only; synthetic data has no vocabulary to match."""
  config = run_config(tmp_path, warm_start="production")
  with pytest.raises(UserInputError, match="python -m trainer.retrain"):
    warm_start.initialize(built(config, 5), config, DATASET)
  config = run_config(tmp_path, warm_start=str(tmp_path))
  with pytest.raises(UserInputError, match="not --synthetic_data"):
    warm_start.initialize(built(config, 5), config, None)
