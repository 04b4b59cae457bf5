"""The distributed train and evaluation steps, and evaluation on the moving-average weights."""

import contextlib

import numpy as np
import tensorflow as tf

from trainer import config as config_lib
from trainer.modeling import noise
from trainer.training import metrics as metrics_lib
from trainer.training import optimization

_DENSE_GRADIENT_MIN_BATCH = 100  # Above this per-replica batch a dense all-reduce is cheaper.


def _uses_dense_gradients(dense_gradients, per_replica_batch_size):
  """Whether embedding gradients are all-reduced dense rather than as IndexedSlices."""
  if dense_gradients == "auto":
    return per_replica_batch_size >= _DENSE_GRADIENT_MIN_BATCH
  return dense_gradients == "always"


def build_train_step(strategy, model, optimizer, training, element_spec):
  """A tf.function running one step on every replica.

  Args:
    strategy: the `tf.distribute.Strategy` the model was built under.
    model: the Keras model.
    optimizer: its optimizer (applies gradients as given: see `optimization`).
    training: a `config.TrainingConfig`.
    element_spec: of the distributed training dataset.

  Returns:
    train_step(batch, step) -> (sum of per-example losses, number correct) over the global
    batch; `step` (int64, from 1) keys the dropout noise (see `noise`).
  """
  global_batch_size = training.global_batch_size
  dense = _uses_dense_gradients(training.dense_gradients, config_lib.per_replica_batch_size(
      global_batch_size, strategy.num_replicas_in_sync))

  def replica_step(tokens, labels, step):
    """Forward, backward, one all-reduce of the gradients, update."""
    with tf.GradientTape() as tape, noise.example_noise(step, global_batch_size):
      logits = model(tokens, training=True)[:, 0]
      losses = tf.nn.sigmoid_cross_entropy_with_logits(
          labels=tf.cast(labels, tf.float32), logits=logits)
      # Gradients are summed across replicas, so each averages over the global batch.
      loss = tf.nn.compute_average_loss(losses, global_batch_size=global_batch_size)
      scaled_loss = optimizer.scale_loss(loss)
    gradients = tape.gradient(scaled_loss, model.trainable_variables)
    if dense:
      gradients = [tf.convert_to_tensor(g) for g in gradients]
    if strategy.num_replicas_in_sync > 1:
      gradients = tf.distribute.get_replica_context().all_reduce(
          tf.distribute.ReduceOp.SUM, gradients)
    optimizer.apply(gradients, model.trainable_variables)
    correct = tf.reduce_sum(tf.cast(tf.equal(tf.cast(logits > 0, tf.int32), labels), tf.int32))
    return tf.reduce_sum(losses), correct

  @tf.function(input_signature=[element_spec, tf.TensorSpec([], tf.int64)])
  def train_step(batch, step):
    """Runs the replicas' steps and sums their statistics."""
    loss_sum, correct = strategy.run(replica_step, args=(*batch, step))
    return (strategy.reduce(tf.distribute.ReduceOp.SUM, loss_sum, axis=None),
            strategy.reduce(tf.distribute.ReduceOp.SUM, correct, axis=None))

  return train_step


def build_eval_step(strategy, model, element_spec):
  """A tf.function predicting one batch per replica.

  Returns:
    eval_step(batch) -> (probabilities, labels, losses) of all replicas, gathered.
  """
  def replica_step(tokens, labels):
    """Probabilities and losses of one batch."""
    logits = model(tokens, training=False)[:, 0]
    losses = tf.nn.sigmoid_cross_entropy_with_logits(
        labels=tf.cast(tf.maximum(labels, 0), tf.float32), logits=logits)
    return tf.sigmoid(logits), labels, losses

  @tf.function(input_signature=[element_spec])
  def eval_step(batch):
    """Gathers every replica's predictions."""
    outputs = strategy.run(replica_step, args=batch)
    return tuple(strategy.gather(value, axis=0) for value in outputs)

  return eval_step


@contextlib.contextmanager
def evaluation_weights(model, optimizer):
  """Inside the block the model holds the moving average of its weights (when EMA is on).

  The averages and the trained weights trade places on entry and again on exit, so training
  continues from its own weights and checkpoints keep both.
  """
  averages = optimization.moving_averages(optimizer)
  if averages is None:
    yield
    return
  pairs = list(zip(model.trainable_variables, averages))

  def swap():
    """Exchanges the values of each weight and its average."""
    for weight, average in pairs:
      value = tf.identity(weight.value)
      weight.assign(average.value)
      average.assign(value)

  swap()
  try:
    yield
  finally:
    swap()


def evaluate(eval_step, dataset, reading=contextlib.nullcontext):
  """Evaluates a distributed `endless` evaluation dataset: stops when every replica is done.

  Args:
    eval_step: from `build_eval_step`.
    dataset: the distributed evaluation dataset.
    reading: returns the context that each read of a batch runs in (error reports).

  Returns:
    Dict of metrics (see `metrics.classification_metrics`).
  """
  probabilities, labels, losses = [], [], []
  batches = iter(dataset)
  while True:
    with reading():
      batch = next(batches)
    batch_probabilities, batch_labels, batch_losses = (v.numpy() for v in eval_step(batch))
    real = batch_labels >= 0  # Filler batches of finished pipelines have label -1.
    if not real.any():
      break
    probabilities.append(batch_probabilities[real])
    labels.append(batch_labels[real])
    losses.append(batch_losses[real])
  return metrics_lib.classification_metrics(
      np.concatenate(probabilities), np.concatenate(labels), np.concatenate(losses))
