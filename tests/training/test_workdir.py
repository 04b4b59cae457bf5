"""The run folder's records: resuming with the same settings, and fields added since a run began."""

import pytest

from tests.training.training_testing import TINY
from trainer import config as config_lib
from trainer.errors import UserInputError
from trainer import storage
from trainer.training import workdir as workdir_lib


def write_record(tmp_path, config, drop=()):
  """Writes the run record of `config` without the result-identity fields named in `drop`."""
  record = workdir_lib.run_record(config, None)
  for name in drop:
    section, field = name.split(".")
    del record["result_identity"][section][field]
  storage.write_json_atomically(str(tmp_path / workdir_lib.RUN_RECORD_FILE), record)
  return workdir_lib.output_locations(str(tmp_path))


def test_a_field_added_since_the_run_began_counts_as_its_default(tmp_path):
  """A record written before a field existed resumes when the field keeps its default, and is
  refused, naming the field, when it does not."""
  assert TINY.training.seed == config_lib.Config().training.seed
  workdir_lib.check_resumable(write_record(tmp_path, TINY, drop=["training.seed"]), TINY, None)
  assert TINY.input.max_length != config_lib.Config().input.max_length
  locations = write_record(tmp_path, TINY, drop=["input.max_length"])
  with pytest.raises(UserInputError, match=r"other values of \['input.max_length'\]"):
    workdir_lib.check_resumable(locations, TINY, None)
