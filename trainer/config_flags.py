"""Command-line flags for `--preset` and for every `Config` field, which override the preset."""

import dataclasses

from absl import flags

from trainer import config as config_lib
from trainer.errors import UserInputError

FLAGS = flags.FLAGS


def define_config_flags():
  """Defines --preset and one flag per Config field (unset = the preset's value)."""
  flags.DEFINE_enum("preset", "default", sorted(config_lib.PRESETS),
                    "Named hyperparameters to start from; every field can be overridden.")
  for field in dataclasses.fields(config_lib.Config):
    default = field.default
    help_text = f"Config.{field.name} (preset value if unset; default preset: {default})."
    if isinstance(default, bool):
      flags.DEFINE_boolean(field.name, None, help_text)
    elif isinstance(default, int):
      flags.DEFINE_integer(field.name, None, help_text)
    elif isinstance(default, float):
      flags.DEFINE_float(field.name, None, help_text)
    elif isinstance(default, tuple):
      flags.DEFINE_list(field.name, None, help_text + " Comma-separated.")
    else:
      flags.DEFINE_string(field.name, None, help_text)


def config_from_flags():
  """The preset named by --preset with the fields given on the command line replaced."""
  overrides = {}
  for field in dataclasses.fields(config_lib.Config):
    value = FLAGS[field.name].value
    if value is None:
      continue
    if isinstance(field.default, tuple):
      try:
        value = tuple(int(v) for v in value)
      except ValueError as e:
        raise UserInputError(f"--{field.name}={','.join(value)}: give comma-separated "
                             "integers, such as 64,64.") from e
    overrides[field.name] = value
  config = dataclasses.replace(config_lib.get_preset(FLAGS.preset), **overrides)
  try:
    config.check()
  except ValueError as e:
    raise UserInputError(f"--{e}") from e
  return config
