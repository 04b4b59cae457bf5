"""The data of a run: the prepared dataset's facts, and its distributed train and eval batches."""

import contextlib
import dataclasses
import math

from absl import logging
import tensorflow as tf

from trainer.cluster import threads
from trainer import config as config_lib
from trainer.data import input_pipeline
from trainer.data import prepared_dataset
from trainer.errors import UserInputError
from trainer import storage
from trainer.training import workdir as workdir_lib


@dataclasses.dataclass(frozen=True)
class RunData:
  """The dataset a run trains on, and the schedule it implies."""
  config: config_lib.Config  # The config, its vocab_size fitted to the dataset.
  metadata: dict | None  # metadata.json of the prepared dataset; None with synthetic data.
  identity: dict | None  # What checkpoints depend on (`workdir.data_identity`).
  steps_per_epoch: int
  total_steps: int  # Of the whole schedule.
  end_step: int  # Where this run stops (--max_steps).
  eval_every_steps: int


def resolve_data(config):
  """Reads the dataset's metadata, fits the vocabulary size to it, and plans the steps.

  Returns:
    A `RunData`.
  """
  run = config.run
  metadata = identity = None
  if run.synthetic_data:
    train_examples = run.synthetic_steps * config.training.global_batch_size
  elif not run.data_dir:
    raise UserInputError("Give --data_dir=<a prepared dataset> (python -m trainer.prepare "
                         "makes one), or --synthetic_data.")
  else:
    metadata = prepared_dataset.load_metadata(run.data_dir)
    if config.data.vocab_size > metadata["vocab_size"]:
      logging.info("The dataset has %d ids; using them all (vocab_size %d asked).",
                   metadata["vocab_size"], config.data.vocab_size)
      config = config_lib.override(config, vocab_size=metadata["vocab_size"])
    identity = workdir_lib.data_identity(run.data_dir, metadata)
    train_examples = metadata["splits"]["train"]["examples"]
  batch = config.training.global_batch_size
  steps_per_epoch = max(1, train_examples // batch)
  total_steps = (run.synthetic_steps if run.synthetic_data
                 else max(1, math.ceil(config.training.epochs * train_examples / batch)))
  return RunData(config, metadata, identity, steps_per_epoch, total_steps,
                 end_step=min(total_steps, run.max_steps or total_steps),
                 eval_every_steps=run.eval_every_steps or steps_per_epoch)


@contextlib.contextmanager
def reading(data_dir):
  """Inside the block, a failed read of the prepared dataset `data_dir` is reported in one line.

  A damaged shard is named (exit 2); a storage that may come back is retryable (exit 43), never
  taken for a lost worker.
  """
  if not data_dir:
    yield
    return
  with storage.reported_failures(data_dir, f"Reading the prepared dataset {data_dir}",
                                 f"Check that this job can read {data_dir}."):
    try:
      yield
    except tf.errors.DataLossError as e:  # A TFRecord failed its checksum or is truncated.
      raise prepared_dataset.corrupt_data_error(data_dir, e) from e


def within_cpu_limit(dataset):
  """`dataset` with tf.data's threads and autotuning held to the container's CPU limit, if any.

  (TensorFlow's own pools are sized in `cluster.threads`; tf.data's are set per dataset.)
  """
  cores, _ = threads.cpu_limit()
  if cores is None:
    return dataset
  options = tf.data.Options()
  options.threading.private_threadpool_size = cores
  options.autotune.cpu_budget = cores
  return dataset.with_options(options)


def build_datasets(strategy, data, start_step):
  """The distributed training data (from `start_step` on) and evaluation data.

  Args:
    strategy: a `tf.distribute.Strategy`.
    data: the `RunData`.
    start_step: the step the training data starts at.

  Returns:
    (training dataset, {"validation": ..., "test": ...} or {} with synthetic data).
  """
  config = data.config
  per_replica_batch_size = config_lib.per_replica_batch_size(config.training.global_batch_size,
                                                             strategy.num_replicas_in_sync)

  def split_files(split):
    """The shards of a split."""
    return prepared_dataset.split_files(config.run.data_dir, split, data.metadata)

  def training_dataset(context):
    """This worker's training batches, from the restored step on."""
    if config.run.synthetic_data:
      return within_cpu_limit(input_pipeline.make_synthetic_dataset(
          per_replica_batch_size, config.input.max_length, config.data.vocab_size,
          seed=config.training.seed))
    return within_cpu_limit(input_pipeline.make_dataset(
        split_files("train"), per_replica_batch_size, config.input, training=True,
        seed=config.training.seed, input_context=context, start_step=start_step))

  def evaluation_dataset(split):
    """This worker's evaluation batches, then fillers until every worker is done."""
    return strategy.distribute_datasets_from_function(
        lambda context: within_cpu_limit(input_pipeline.make_dataset(
            split_files(split), config.run.eval_batch_size, config.input, training=False,
            input_context=context, endless=True)))

  training = strategy.distribute_datasets_from_function(training_dataset)
  if config.run.synthetic_data:
    return training, {}
  return training, {split: evaluation_dataset(split) for split in ("validation", "test")}
