"""The nested config, its presets, and the flags made from it (--preset and per-field flags)."""

import collections
import dataclasses
import importlib

from absl import flags
from absl.testing import flagsaver
import pytest

from trainer import cli
from trainer import config as config_lib
from trainer.errors import UserInputError

COMMANDS = ("train", "prepare", "predict", "promote", "retrain", "preflight")

cli.define_flags(cli.RUN_FLAG_GROUPS)


def parse(*args):
  """Parses command-line flags into the global FLAGS."""
  flags.FLAGS.unparse_flags()
  flags.FLAGS(["train", *args])


@flagsaver.flagsaver
def test_flags_override_the_preset():
  """Only the fields given change; the rest come from the preset."""
  parse("--preset=keras_example", "--rnn_units=32,16", "--dropout=0.1", "--rnn=gru",
        "--num_shards=4", "--split_seed=3")
  config = cli.config_from_flags()
  preset = config_lib.get_preset("keras_example")
  assert (config.model.rnn_units, config.model.dropout, config.model.rnn) == ((32, 16), 0.1, "gru")
  assert (config.data.num_shards, config.data.split_seed) == (4, 3)
  assert config.input.max_length == preset.input.max_length
  assert config.training.epochs == preset.training.epochs


@flagsaver.flagsaver
def test_default_preset_without_flags():
  """No flags: the default preset as it is."""
  parse()
  assert cli.config_from_flags() == config_lib.get_preset("default")


@pytest.mark.parametrize("arg, message", [
    ("--rnn_units=a,b", "--rnn_units=a,b: give comma-separated int values"),
    ("--pooling=attention", "--pooling='attention': choose one of"),
    ("--num_shards=0", "--num_shards=0: it must be positive"),
])
@flagsaver.flagsaver
def test_bad_values_name_the_flag(arg, message):
  """A value that cannot work is refused with the flag's name."""
  parse(arg)
  with pytest.raises(UserInputError, match=message):
    cli.config_from_flags()


@pytest.mark.parametrize("command", COMMANDS)
def test_no_flag_name_is_used_twice(command):
  """Every field of every option group a command defines flags for is a flag of its own."""
  main = importlib.import_module(f"trainer.{command}")
  names = [field.name for group in main.FLAG_GROUPS for field in dataclasses.fields(group)]
  names += ["preset"] * any(group in cli.CONFIG_SECTIONS for group in main.FLAG_GROUPS)
  names += ["rollback"] * (command == "promote")  # Its one flag outside the groups.
  assert len(names) == len(set(names)), collections.Counter(names).most_common(3)


def test_the_commands_that_train_take_the_whole_config():
  """train and retrain have a flag for every config field; prepare for every data field."""
  for command in ("train", "retrain"):
    groups = importlib.import_module(f"trainer.{command}").FLAG_GROUPS
    assert set(cli.CONFIG_SECTIONS) <= set(groups)
  assert config_lib.DataConfig in importlib.import_module("trainer.prepare").FLAG_GROUPS
  assert set(config_lib.field_sections()) <= set(flags.FLAGS)


def test_override_reaches_every_section_and_refuses_unknown_names():
  """override() takes field names of any section, and names a misspelt one."""
  config = config_lib.override(config_lib.Config(), vocab_size=5, rnn="gru", seed=3, max_steps=2)
  assert (config.data.vocab_size, config.model.rnn, config.training.seed,
          config.run.max_steps) == (5, "gru", 3, 2)
  with pytest.raises(TypeError, match="vocab_sise"):
    config_lib.override(config, vocab_sise=5)


def test_result_identity_ignores_how_a_run_executes():
  """Run settings (checkpoint interval, strategy...) may change on resume; the model may not."""
  config = config_lib.get_preset("local")
  same = config_lib.override(config, checkpoint_every_steps=7, strategy="mirrored",
                             num_shards=2)
  assert same.result_identity() == config.result_identity()
  assert config_lib.override(config, rnn_units=(4,)).result_identity() != (
      config.result_identity())
