r"""Turns IMDB reviews into a vocabulary and sharded TFRecords for training.

  python -m trainer.prepare --input=../shared/data/aclImdb_v1_labeled.tar.gz \
      --output_dir=/tmp/imdb_prepared [--preset=default] [--vocab_size=... --num_shards=...]

--input is the aclImdb .tar.gz (local or gs://), the extracted aclImdb folder, `tfds`, or empty
to download the canonical tarball. The data flags are the `data` section of trainer/config.py,
starting from the --preset's (the one you will train, so that both agree on the vocabulary).
The work is `data.prepare.prepare`, an Apache Beam pipeline: on this machine by default, on
Dataflow with --runner=DataflowRunner --beam_pipeline_options=project=P,region=R,... (docs/data.md).
"""

import dataclasses

from apache_beam.options.pipeline_options import PipelineOptions

from trainer import cli
from trainer.config import DataConfig
from trainer.config import option
from trainer.config import Options
from trainer.data import prepare
from trainer.data import sources


@dataclasses.dataclass(frozen=True)
class PrepareOptions(Options):
  """The flags of prepare beside the source and the data section."""
  output_dir: str | None = option(None, "Folder (local or gs://) for the prepared dataset.",
                                  required=True)
  overwrite: bool = option(False, "Replace a different dataset already in --output_dir.")
  runner: str = option("DirectRunner", "Apache Beam runner: DirectRunner (this machine) or "
                       "DataflowRunner (many machines; see --beam_pipeline_options).")
  beam_pipeline_options: tuple[str, ...] = option(
      (), "More Beam pipeline options as key=value, comma-separated, e.g. project=P,region=R,"
      "temp_location=gs://B/tmp,setup_file=./setup.py.")

  def pipeline_options(self):
    """The Beam `PipelineOptions` these flags name."""
    flags = [f"--{item}" for item in self.beam_pipeline_options]
    return PipelineOptions(flags, runner=self.runner)


def main():
  """Reads the source named by the flags and prepares the dataset."""
  data = cli.config_from_flags().data
  options = cli.options_from_flags(PrepareOptions())
  prepare.prepare(cli.source_from_flags(), options.output_dir, data, overwrite=options.overwrite,
                  pipeline_options=options.pipeline_options())


FLAG_GROUPS = (DataConfig, sources.SourceOptions, PrepareOptions)

if __name__ == "__main__":
  cli.define_flags(FLAG_GROUPS)
  cli.run(main)
