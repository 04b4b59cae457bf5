"""What every command shares: flags made from option dataclasses, and running a main.

Each field of an option dataclass (the `config` sections, `sources.SourceOptions`,
`resolve.ClusterOptions`) is a flag of the same name, unset by default; the values given on the
command line replace the fields of a base value (a preset, or the dataclass's defaults).
"""

import dataclasses
import sys
import types
import typing

from absl import app
from absl import flags

from trainer.cluster import resolve
from trainer.cluster import strategy as strategy_lib
from trainer import config as config_lib
from trainer.data import sources
from trainer import errors
from trainer.errors import UserInputError

FLAGS = flags.FLAGS
_DEFINERS = {bool: flags.DEFINE_boolean, int: flags.DEFINE_integer, float: flags.DEFINE_float,
             str: flags.DEFINE_string}


def _value_type(field):
  """The type of a field's values, without `| None`; a tuple field gives tuple."""
  if isinstance(field.type, types.UnionType):
    return next(arg for arg in typing.get_args(field.type) if arg is not type(None))
  return typing.get_origin(field.type) or field.type


def define_option_flags(option_class, default_note=None):
  """Defines one flag per field of `option_class`, unset (None) unless given.

  Args:
    option_class: a dataclass whose fields are made with `config.option`.
    default_note: what an unset flag means, when not the field's default (e.g. the preset's).
  """
  for field in dataclasses.fields(option_class):
    help_text = field.metadata.get("help", "")
    if field.metadata.get("choices"):
      help_text += f" One of {', '.join(field.metadata['choices'])}."
    default = field.default
    if isinstance(default, tuple):
      default = ",".join(map(str, default)) or "none"
    if default is not None:
      help_text += f" ({default_note or 'default'}: {default})"
    value_type = _value_type(field)
    if value_type is tuple:
      flags.DEFINE_list(field.name, None, help_text)
    else:
      _DEFINERS[value_type](field.name, None, help_text)
    if field.metadata.get("required"):
      flags.mark_flag_as_required(field.name)


def _flag_value(field):
  """The value given for a field's flag, converted to the field's type; None when unset."""
  value = FLAGS[field.name].value
  if value is None or _value_type(field) is not tuple:
    return value
  element_type = typing.get_args(field.type)[0]
  try:
    return tuple(element_type(item) for item in value)
  except ValueError as e:
    raise UserInputError(f"--{field.name}={','.join(value)}: give comma-separated "
                         f"{element_type.__name__} values, such as 64,64.") from e


def options_from_flags(base):
  """`base` (an option dataclass) with the fields given on the command line replaced.

  Fields without a flag in this command keep their value.

  Raises:
    UserInputError: naming the flag whose value cannot work.
  """
  given = {field.name: _flag_value(field) for field in dataclasses.fields(base)
           if field.name in FLAGS}
  try:
    return dataclasses.replace(base, **{k: v for k, v in given.items() if v is not None})
  except ValueError as e:  # The option dataclasses check their values (`config.Options`).
    raise UserInputError(f"--{e}") from e


CONFIG_SECTIONS = tuple(section.type for section in dataclasses.fields(config_lib.Config))
# The flag groups of the commands that train: the whole config, the source and the cluster.
RUN_FLAG_GROUPS = (*CONFIG_SECTIONS, sources.SourceOptions, resolve.ClusterOptions)


def define_flags(groups):
  """Defines a command's flags: one per field of each option class of `groups`.

  Config sections get the preset's value when unset, so --preset comes with them.

  Args:
    groups: option dataclasses (`config.Options`), e.g. `(*CONFIG_SECTIONS, TrainOptions)`.
  """
  if any(group in CONFIG_SECTIONS for group in groups):
    flags.DEFINE_enum("preset", "default", config_lib.preset_names(),
                      "Named configuration to start from (trainer/configs/); every field can be "
                      "overridden by its flag.")
  for group in groups:
    define_option_flags(group, default_note="the preset's value when unset; default preset"
                        if group in CONFIG_SECTIONS else None)


def define_config_flags():
  """Defines --preset and one flag per field of the config (for benchmarks and notebooks)."""
  define_flags(CONFIG_SECTIONS)


def config_from_flags():
  """The preset named by --preset with the fields given on the command line replaced.

  Sections whose fields this command has no flags for keep the preset's values.
  """
  preset = config_lib.get_preset(FLAGS.preset)
  return dataclasses.replace(preset, **{
      section.name: options_from_flags(getattr(preset, section.name))
      for section in dataclasses.fields(config_lib.Config)})


def given_flags():
  """{name: value} of the flags given on the command line: what a result was made with."""
  return {name: FLAGS[name].value for name in sorted(FLAGS) if FLAGS[name].present}


def strategy_from_flags(config, trained=False):
  """The strategy of --strategy and the cluster flags; create it before any other TF op.

  `trained`: the run has its last checkpoint already (see `strategy.build_strategy`).
  """
  return strategy_lib.build_strategy(config.run.strategy,
                                     options_from_flags(resolve.ClusterOptions()), trained)


def source_from_flags():
  """The reviews named by the source flags (--input, ...)."""
  return options_from_flags(sources.SourceOptions()).read()


def parse_flags(argv):
  """Parses the command line; a flag error (unknown, bad value, missing) exits with code 2.

  absl's own parser exits with 1, which the manifests retry; a typo must fail at once.
  """
  try:
    return FLAGS(argv)
  except flags.Error as e:
    print(f"error: {e}\nPass --helpfull to see the flags.", file=sys.stderr)
    sys.exit(errors.USER_ERROR_EXIT_CODE)


def run(main, takes_arguments=False):
  """Runs a command's `main()`, or `main(arguments)` if it `takes_arguments`.

  A bad flag, and positional arguments of a command that takes none, are refused. A
  UserInputError exits with one line and code 2; an `errors.JobStopped` with its own code (42 for
  `Preempted` and `PeerLost`: restart the job).
  """

  def main_reporting_errors(argv):
    """Calls `main`, printing these errors as one clear line instead of a traceback."""
    try:
      if takes_arguments:
        main(argv[1:])
      elif len(argv) > 1:
        raise UserInputError(f"Unexpected arguments {argv[1:]}; every option is a --flag.")
      else:
        main()
    except UserInputError as e:
      print(f"error: {e}", file=sys.stderr)
      sys.exit(errors.USER_ERROR_EXIT_CODE)
    except errors.JobStopped as e:
      print(str(e), file=sys.stderr)
      sys.exit(e.exit_code)

  app.run(main_reporting_errors, flags_parser=parse_flags)
