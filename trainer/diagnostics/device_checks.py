"""Checks of this process's devices: GPUs and CUDA libraries, the cuDNN kernel, the precision.

The model's steps are timed at docs/scaling.md's reference shape for one GPU (128 reviews of 200
tokens), on synthetic right-padded batches, forward and backward, median of a few after a
warm-up.
"""

import contextlib
import re
import statistics
import time

import keras
from keras import layers
import tensorflow as tf

from trainer.cluster import gpus
from trainer.data import input_pipeline
from trainer.diagnostics.report import CannotRunHere
from trainer.diagnostics.report import CheckFailed
from trainer import errors
from trainer.modeling import model as model_lib
from trainer.training import optimization

REFERENCE_BATCH = 128  # Reviews per GPU of docs/scaling.md's reference throughput.
REFERENCE_LENGTH = 200  # Tokens per review, the same.
TIMED_STEPS = 5
MIN_SPEED_UP = 1.0  # Mixed precision slower than float32 costs GPU hours: pass float32 then.


def check_gpus(require_gpus=None):
  """GPUs allocated vs seen, and the CUDA and cuDNN libraries TensorFlow loads.

  Run it before TensorFlow's runtime starts (it lists devices and loads libraries only).
  """
  expected, source = gpus.allocated_gpus(require_gpus)
  seen = len(tf.config.list_physical_devices("GPU"))
  if not expected and not seen:
    raise CannotRunHere("no GPU allocated (--require_gpus, TRAINER_REQUIRE_GPUS, "
                        "NVIDIA_VISIBLE_DEVICES) or seen")
  lines, problems = gpus.library_report()
  loaded = [line.split(":")[0] for line in lines if ".so." in line]
  versions = [line.strip() for line in lines if line.startswith("  ")]
  found = (f"{expected} allocated ({source or 'nothing asked'}), {seen} seen; "
           f"{len(loaded)} CUDA libraries loaded ({', '.join(versions) or 'no versions'})")
  if seen < expected or problems:
    raise CheckFailed(f"{found}; {'; '.join(problems) or 'check the driver (nvidia-smi)'}")
  return found


@contextlib.contextmanager
def _dtype_policy(policy):
  """Inside the block, Keras builds layers with the dtype policy `policy`."""
  previous = keras.mixed_precision.global_policy()
  keras.mixed_precision.set_global_policy(policy)
  try:
    yield
  finally:
    keras.mixed_precision.set_global_policy(previous)


def reference_batch(config, batch_size=REFERENCE_BATCH):
  """(tokens int32[batch, time], labels int32[batch]): right-padded, of the reference shape."""
  return next(iter(input_pipeline.make_synthetic_dataset(
      batch_size, REFERENCE_LENGTH, config.data.vocab_size, seed=config.training.seed)))


def build_reference_model(config, policy="float32"):
  """The config's model, built with the dtype policy `policy`."""
  with _dtype_policy(policy):
    return model_lib.build_model(config)


def _set_cudnn(model, use_cudnn):
  """Sets `use_cudnn` ("auto", True or False) on every recurrent layer of the model."""
  for layer in model.layers:
    if isinstance(layer, layers.Bidirectional):
      layer.forward_layer.use_cudnn = layer.backward_layer.use_cudnn = use_cudnn


def step_seconds(model, batch, use_cudnn="auto", steps=TIMED_STEPS):
  """Median seconds of one forward and backward pass of `model` on `batch`, after a warm-up.

  Raises:
    ValueError: from Keras, when `use_cudnn` is True and the cuDNN kernel cannot run.
  """
  _set_cudnn(model, use_cudnn)
  tokens, labels = batch

  @tf.function
  def step():
    """Loss and gradients of the batch."""
    with tf.GradientTape() as tape:
      logits = model(tokens, training=True)[:, 0]
      loss = tf.reduce_mean(tf.nn.sigmoid_cross_entropy_with_logits(
          labels=tf.cast(labels, tf.float32), logits=tf.cast(logits, tf.float32)))
    return loss, tape.gradient(loss, model.trainable_variables)

  seconds = []
  for _ in range(steps + 1):  # The first traces and warms up.
    start = time.perf_counter()
    loss, _ = step()
    float(loss)  # Waits for the device.
    seconds.append(time.perf_counter() - start)
  return statistics.median(seconds[1:])


def compare_kernels(model, batch):
  """One line on the model's recurrent layers: cuDNN's kernel against the generic one.

  Raises:
    CheckFailed: when the cuDNN kernel cannot run them.
  """
  reasons = model_lib.cudnn_ineligibility(model)
  if reasons:
    raise CheckFailed(f"the model's recurrent layers cannot take the cuDNN kernel: {reasons}")
  try:
    fused = step_seconds(model, batch, use_cudnn=True)
  except ValueError as e:  # Traced, the message quotes the layer's call; Keras' reason, bold:
    reason = [re.sub(r"\x1b\[[0-9;]*m", "", line).strip() for line in str(e).splitlines()
              if "use_cudnn=True" in line]
    raise CheckFailed(f"the model's recurrent layers cannot take the cuDNN kernel here: "
                      f"{reason[0] if reason else errors.first_line(e)}") from e
  generic = step_seconds(model, batch, use_cudnn=False)
  return (f"cuDNN kernel taken: {fused * 1e3:.1f} ms per step, {generic / fused:.1f}x the "
          f"generic kernel's {generic * 1e3:.1f} ms")


def check_cudnn_kernel(config):
  """Whether the model's LSTM (or GRU) takes the fused cuDNN kernel, timed one step each way."""
  if not tf.config.list_physical_devices("GPU"):
    raise CannotRunHere("no GPU: the cuDNN kernel runs only there")
  model = build_reference_model(config)
  return compare_kernels(model, reference_batch(config))


def check_precision(config):
  """The precision policy in force (--precision), and its speed-up over float32."""
  policy = optimization.resolve_precision(config.run.precision)
  if policy == "float32":
    if not tf.config.list_physical_devices("GPU"):
      raise CannotRunHere(f"float32 in force (--precision={config.run.precision}); mixed "
                          "precision's speed-up needs a GPU with tensor cores")
    return f"float32 in force (--precision={config.run.precision}): nothing to compare"
  batch = reference_batch(config)
  float32 = step_seconds(build_reference_model(config), batch)
  mixed = step_seconds(build_reference_model(config, policy), batch)
  found = (f"{policy} in force: {float32 / mixed:.2f}x float32's speed ({mixed * 1e3:.1f} vs "
           f"{float32 * 1e3:.1f} ms per step)")
  if float32 / mixed < MIN_SPEED_UP:
    raise CheckFailed(f"{found}: slower than float32, pass --precision=float32")
  return found


def gradient_bytes(config):
  """Bytes of the model's gradients, all float32: what a train step all-reduces."""
  return build_reference_model(config).count_params() * 4

