"""Warm start: a new run's weights initialised from an export (`--warm_start=<export>`).

The weights are the export's own: the trainable variables of the SavedModel's serving model (what
production answers with: the moving averages, or the best validation's weights), copied in order
into the new model. That is only meaningful for the same network reading the same ids, so the
export's model section, vocabulary size and vocabulary (the first vocab_size tokens) must match
this run's; otherwise the run is refused (exit 2) naming the difference. Retraining resolves
`--warm_start=production` to the production folder's current model before it trains.
"""

import dataclasses
import json

from absl import logging
import tensorflow as tf

from trainer.data import text
from trainer.errors import UserInputError
from trainer.serving import export
from trainer import storage

PRODUCTION = "production"  # Resolved by retrain; `train` has no production folder.


def _config_differences(metadata, config):
  """What makes the export's network another one than this run's: its model fields, vocab_size."""
  exported = metadata.get("config") or {}
  theirs = {"vocab_size": (exported.get("data") or {}).get("vocab_size"),
            **(exported.get("model") or {})}
  ours = json.loads(json.dumps({"vocab_size": config.data.vocab_size,
                                **dataclasses.asdict(config.model)}))
  return [f"{key} {theirs.get(key)!r} in the export, {ours.get(key)!r} here"
          for key in sorted(set(theirs) | set(ours)) if theirs.get(key) != ours.get(key)]


def _vocabulary_difference(exported, ours, vocab_size):
  """Where the first `vocab_size` tokens of two vocabularies differ, or None."""
  exported, ours = exported[:vocab_size], ours[:vocab_size]
  if exported == ours:
    return None
  differing = [i for i, (a, b) in enumerate(zip(exported, ours)) if a != b]
  differing += list(range(min(len(exported), len(ours)), max(len(exported), len(ours))))
  first = differing[0]
  at = lambda tokens: repr(tokens[first]) if first < len(tokens) else "nothing"
  return (f"the vocabulary differs at {len(differing)} of the first {vocab_size} ids (first at id "
          f"{first}: {at(exported)} in the export, {at(ours)} in this run's data)")


def check_compatible(export_dir, config, vocabulary):
  """Raises UserInputError unless the export at `export_dir` is the network this run trains.

  Args:
    export_dir: an export (local or gs://).
    config: this run's `config.Config` (its vocab_size fitted to the data).
    vocabulary: this run's vocabulary, list of tokens (index = id).
  """
  metadata = export.load_metadata(export_dir)
  problems = _config_differences(metadata, config)
  exported_vocabulary = text.load_vocabulary(storage.join(export_dir, export.VOCAB_FILE))
  vocabulary_problem = _vocabulary_difference(exported_vocabulary, vocabulary,
                                              config.data.vocab_size)
  problems += [vocabulary_problem] if vocabulary_problem else []
  if problems:
    raise UserInputError(f"--warm_start={export_dir} cannot initialise this run: "
                         f"{'; '.join(problems)}. Warm start from an export of the same model "
                         "config and data vocabulary, or train from scratch (--warm_start=).")


def initialize(model, config, metadata):
  """Copies the trainable weights of the export `config.training.warm_start` into `model`.

  Args:
    model: the freshly built keras.Model (under the run's strategy, if any).
    config: this run's `config.Config`.
    metadata: the metadata.json of this run's prepared dataset (None with synthetic data).

  Raises:
    UserInputError: when the export is not this network, or warm_start is "production" outside
      retraining.
  """
  export_dir = config.training.warm_start
  if export_dir == PRODUCTION:
    raise UserInputError("--warm_start=production names the production model of retrain "
                         "(python -m trainer.retrain --production=...); here pass the path of an "
                         "export instead.")
  if metadata is None:
    raise UserInputError("--warm_start needs a prepared dataset (its vocabulary must match the "
                         "export's), not --synthetic_data.")
  vocabulary = text.load_vocabulary(storage.join(config.run.data_dir, metadata["vocab_file"]))
  check_compatible(export_dir, config, vocabulary)
  exported = tf.saved_model.load(export_dir).trainable_variables
  shapes = ([tuple(v.shape) for v in exported], [tuple(v.shape) for v in model.trainable_variables])
  if shapes[0] != shapes[1]:
    raise UserInputError(f"--warm_start={export_dir}: its weights have shapes {shapes[0]}, this "
                         f"model's {shapes[1]}; export it again with this code.")
  for variable, value in zip(model.trainable_variables, exported):
    variable.assign(value)
  logging.info("Warm start: %d weights initialised from %s.", len(exported), export_dir)
