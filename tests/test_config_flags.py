"""--preset and per-field flags."""

from absl import flags
from absl.testing import flagsaver
import pytest

from trainer import config as config_lib
from trainer import config_flags
from trainer.errors import UserInputError

config_flags.define_config_flags()


def parse(*args):
  """Parses command-line flags into the global FLAGS."""
  flags.FLAGS.unparse_flags()
  flags.FLAGS(["train", *args])


@flagsaver.flagsaver
def test_flags_override_the_preset():
  """Only the fields given change; the rest come from the preset."""
  parse("--preset=keras_example", "--rnn_units=32,16", "--dropout=0.1", "--rnn=gru")
  config = config_flags.config_from_flags()
  preset = config_lib.get_preset("keras_example")
  assert (config.rnn_units, config.dropout, config.rnn) == ((32, 16), 0.1, "gru")
  assert config.max_length == preset.max_length and config.epochs == preset.epochs


@flagsaver.flagsaver
def test_default_preset_without_flags():
  """No flags: the default preset as it is."""
  parse()
  assert config_flags.config_from_flags() == config_lib.get_preset("default")


@pytest.mark.parametrize("arg, message", [
    ("--rnn_units=a,b", "--rnn_units=a,b: give comma-separated integers"),
    ("--pooling=attention", "--pooling='attention': choose one of"),
])
@flagsaver.flagsaver
def test_bad_values_name_the_flag(arg, message):
  """A value that cannot work is refused with the flag's name."""
  parse(arg)
  with pytest.raises(UserInputError, match=message):
    config_flags.config_from_flags()
