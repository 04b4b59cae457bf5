r"""Checks a node before hours are spent on it: one screen, and exit 0 when every check passed.

  python -m trainer.preflight --workdir=gs://bucket/imdb/runs/manual [--preset=default]

It takes every flag of trainer.train, so that a pod or a Vertex AI job runs it with the training
command's own arguments (k8s/components/preflight, vertex/preflight.yaml): GPUs allocated vs
seen and the CUDA/cuDNN libraries loaded; whether the model's GRU or LSTM takes the cuDNN
kernel; the precision in force and its speed-up; an all-reduce over every GPU and worker, with its
bandwidth; a file written, read, renamed and deleted in the workdir, with the account used; the
peers; the training throughput on synthetic data against docs/scaling.md. A check that cannot
run here (no GPU, one worker) says so. Exit codes: 0 every check that could run passed; 2 one
failed (or a bad flag). The work is `diagnostics.preflight_lib.preflight`.
"""

import dataclasses

from trainer import cli
from trainer.cluster import resolve
from trainer.config import option
from trainer.config import Options
from trainer.diagnostics import preflight_lib
from trainer.errors import UserInputError
from trainer import train


@dataclasses.dataclass(frozen=True)
class PreflightOptions(Options):
  """The flags of preflight beside those of train."""
  preflight_steps: int = option(20, "Timed training steps of the throughput check.",
                                bound="positive")


def main():
  """Runs the checks with the training flags given, prints the screen, fails if a check did."""
  screen, failed = preflight_lib.preflight(
      cli.config_from_flags(), train.workdir_from_flags(),
      cli.options_from_flags(resolve.ClusterOptions()),
      cli.options_from_flags(PreflightOptions()).preflight_steps)
  print(screen, flush=True)
  if failed:
    raise UserInputError(f"preflight: {', '.join(failed)} failed (the screen above says why).")


FLAG_GROUPS = (*train.FLAG_GROUPS, PreflightOptions)

if __name__ == "__main__":
  cli.define_flags(FLAG_GROUPS)
  cli.run(main)
