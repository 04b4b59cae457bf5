"""The run's configuration: typed sections (data, input, model, training, run) and presets.

Every field is a command-line flag of the same name (see `trainer.cli`), so no two sections
share a field name. The defaults are the `default` preset: `Config()` is it. Other presets are
modules of `trainer.configs`, each with `get_config()`. A section with a value it does not allow
cannot be made: the constructor raises ValueError naming the field.

  config = get_preset("local")
  config = override(config, vocab_size=5000, global_batch_size=64)   # by field name
  config.model.rnn_units, config.training.learning_rate
"""

import dataclasses
import importlib
import pkgutil

from trainer.errors import UserInputError

RNN_CHOICES = ("lstm", "gru")
POOLING_CHOICES = ("last", "max_mean")
OPTIMIZER_CHOICES = ("adam", "adamw", "sgd")
SCHEDULE_CHOICES = ("constant", "cosine")
DENSE_GRADIENT_CHOICES = ("auto", "always", "never")
KEEP_CHOICES = ("first", "last")
INPUT_CACHE_CHOICES = ("auto", "memory", "stream")
STRATEGY_CHOICES = ("auto", "default", "one_device", "mirrored", "multi_worker")
PRECISION_CHOICES = ("auto", "float32", "mixed_float16", "mixed_bfloat16")
METRIC_NAMES = ("accuracy", "loss", "auc", "precision", "recall")
EXPORT_CHOICES = ("final", "best")

# What a bound in `option(..., bound=...)` allows, and how an error says it.
_BOUNDS = {
    "positive": (lambda v: v > 0, "it must be positive"),
    "nonnegative": (lambda v: v >= 0, "it cannot be negative"),
    "fraction": (lambda v: 0 <= v < 1, "use a value in [0, 1)"),
    "open_fraction": (lambda v: 0 < v < 1, "use a value strictly between 0 and 1, such as 0.1"),
    "probability": (lambda v: 0 < v <= 1, "use a value in (0, 1], such as 0.05"),
}


def option(default, help_text, *, choices=None, bound=None, required=False):
  """A dataclass field with its flag's help text, what values it allows, and if it must be given."""
  return dataclasses.field(default=default, metadata={
      "help": help_text, "choices": choices, "bound": bound, "required": required})


class Options:
  """Base of the option dataclasses: made only with allowed values (see `check`)."""

  def __post_init__(self):
    """Checks the values of a new instance (frozen dataclasses call this after __init__)."""
    self.check()

  def check(self):
    """Raises ValueError naming the first field whose value is not allowed."""
    for field in dataclasses.fields(self):
      _check_field(field, getattr(self, field.name))


def _check_field(field, value):
  """Raises ValueError if `value` is not one of the field's choices or breaks its bound."""
  choices, bound = field.metadata.get("choices"), field.metadata.get("bound")
  if choices and value not in choices:
    raise ValueError(f"{field.name}={value!r}: choose one of {choices}.")
  if bound and value is not None:
    allowed, rule = _BOUNDS[bound]
    if not all(allowed(v) for v in (value if isinstance(value, tuple) else (value,))):
      raise ValueError(f"{field.name}={value}: {rule}.")


@dataclasses.dataclass(frozen=True)
class DataConfig(Options):
  """What `prepare` writes: the vocabulary, the validation split and the shards."""
  vocab_size: int = option(
      10000, "Words known, <pad> and <unk> included: prepare builds this many; training uses "
      "the first this many of a prepared dataset (rarer words become <unk>).", bound="positive")
  validation_fraction: float = option(
      0.1, "Share of the training reviews (whole movies) moved to validation.",
      bound="open_fraction")
  num_shards: int = option(
      32, "TFRecord files per split: at least the number of workers that read it.",
      bound="positive")
  split_seed: int = option(0, "Picks the validation movies and the order of reviews in shards.")

  def check(self):
    """Raises ValueError naming the first field whose value cannot work."""
    super().check()
    if self.vocab_size <= 2:
      raise ValueError(f"vocab_size={self.vocab_size}: it must exceed the 2 reserved ids "
                       "('<pad>', '<unk>').")


@dataclasses.dataclass(frozen=True)
class InputConfig(Options):
  """How training reads the prepared reviews."""
  max_length: int = option(1000, "Tokens kept per review; longer reviews are truncated.",
                           bound="positive")
  keep: str = option("last", "Which end of a long review is kept.", choices=KEEP_CHOICES)
  sort_window_batches: int = option(64, "Batches sorted by length together (length bucketing).",
                                    bound="positive")
  input_cache: str = option("auto", "memory: each worker holds all the training reviews (the "
                            "same global batches at any cluster shape) and its share of the "
                            "evaluation reviews; stream: reads its share of the shards as a "
                            "stream (memory bounded; the batches depend on the number of "
                            "workers); auto: memory when those files fit in 2 GiB.",
                            choices=INPUT_CACHE_CHOICES)


@dataclasses.dataclass(frozen=True)
class ModelConfig(Options):
  """The bidirectional recurrent classifier (BiGRU by default, BiLSTM with rnn=lstm)."""
  embedding_dim: int = option(128, "Width of the word embedding.", bound="positive")
  rnn: str = option("gru", "Recurrent cell (lstm: the classic cell, more parameters).",
                    choices=RNN_CHOICES)
  rnn_units: tuple[int, ...] = option(
      (64,), "Units per direction of each bidirectional layer, e.g. 64,64.", bound="positive")
  pooling: str = option("max_mean", "last: final states; max_mean: masked max and mean over "
                        "time.", choices=POOLING_CHOICES)
  embedding_dropout: float = option(0.3, "Dropout of whole embedding channels.", bound="fraction")
  word_dropout: float = option(0.3, "Dropout of whole words (their embedding is zeroed).",
                               bound="fraction")
  dropout: float = option(0.5, "Dropout before the output layer.", bound="fraction")

  def check(self):
    """Raises ValueError naming the first field whose value cannot work."""
    if not self.rnn_units:
      raise ValueError("rnn_units=(): give one positive width per layer.")
    super().check()


@dataclasses.dataclass(frozen=True)
class TrainingConfig(Options):
  """The optimization: what, besides data and model, shapes the trained weights."""
  global_batch_size: int = option(32, "Reviews per step over all replicas; divides evenly "
                                  "among them.", bound="positive")
  epochs: float = option(3.0, "Passes over the training split (fractions allowed).",
                         bound="positive")
  optimizer: str = option("adamw", "Optimizer (sgd: plain, without momentum).",
                          choices=OPTIMIZER_CHOICES)
  learning_rate: float = option(2e-3, "Peak learning rate.", bound="positive")
  schedule: str = option("cosine", "After the warm-up: constant, or cosine decay to 0.",
                         choices=SCHEDULE_CHOICES)
  warmup_steps: int = option(200, "Linear warm-up to the peak learning rate.",
                             bound="nonnegative")
  weight_decay: float = option(1e-4, "Decoupled weight decay (adamw only).", bound="nonnegative")
  clip_norm: float = option(1.0, "Clip the gradient to this global norm; 0 disables.",
                            bound="nonnegative")
  dense_gradients: str = option("auto", "All-reduce the embedding gradient dense (auto: from "
                                "100 reviews per replica).", choices=DENSE_GRADIENT_CHOICES)
  ema_momentum: float = option(0.999, "Evaluate and export a moving average of the weights "
                               "with this momentum; 0 = off.", bound="fraction")
  seed: int = option(0, "Seeds the initial weights, dropout and the training data order.")
  warm_start: str = option("", "Initialise the weights from this export (retrain: 'production', "
                           "its current model); its model config and vocabulary must match.")


@dataclasses.dataclass(frozen=True)
class RunConfig(Options):
  """How and where a run executes: none of it changes what is learned, so a resume may change it."""
  data_dir: str = option("", "Prepared dataset (python -m trainer.prepare); empty: train and "
                         "retrain prepare --input first.")
  strategy: str = option("auto", "auto: multi_worker in a cluster of several workers, mirrored "
                         "with several GPUs, else one_device.", choices=STRATEGY_CHOICES)
  precision: str = option("auto", "auto: mixed_float16 on GPUs with tensor cores, "
                          "mixed_bfloat16 on TPU, else float32.", choices=PRECISION_CHOICES)
  max_steps: int = option(0, "Stop after this step (0: no limit); the schedule still spans all "
                          "epochs, so a later run continues it.", bound="nonnegative")
  deterministic: bool = option(False, "Op determinism: the same weights on a rerun and after a "
                               "resume.")
  debug: bool = option(False, "Run eagerly with NaN/Inf checks on every op.")
  synthetic_data: bool = option(False, "Train on generated batches (no dataset, no "
                                "evaluation), to measure throughput.")
  synthetic_steps: int = option(100, "Steps of --synthetic_data.", bound="positive")
  eval_batch_size: int = option(256, "Reviews per evaluation batch per replica.",
                                bound="positive")
  eval_every_steps: int = option(0, "Validate every this many steps; 0 = once per epoch.",
                                 bound="nonnegative")
  checkpoint_every_steps: int = option(500, "Checkpoint every this many steps (and at the "
                                       "end).", bound="positive")
  keep_checkpoints: int = option(3, "Checkpoints kept.", bound="positive")
  log_every_steps: int = option(50, "Log line and summaries every this many steps.",
                                bound="positive")
  tuning_metric: str = option("accuracy", "Validation metric reported to a Vertex AI tuning "
                              "job, and that picks the best weights.", choices=METRIC_NAMES)
  export: str = option("best", "Which weights are tested and exported: the final ones, or "
                       "those of the best validation (by --tuning_metric).",
                       choices=EXPORT_CHOICES)
  max_restarts_without_progress: int = option(
      5, "Starts in a row at the same checkpoint (no new one saved between them) before the run "
      "stops for good with exit 2, so that a job restarted again and again ends; 0: no limit.",
      bound="nonnegative")
  max_nan_recoveries: int = option(3, "Times a NaN/Inf loss is recovered from (back to the last "
                                   "checkpoint, past the offending batches) before the run "
                                   "stops.", bound="nonnegative")
  profile_steps: tuple[int, ...] = option((), "START,END: write a profiler trace of these "
                                          "steps to the TensorBoard folder.",
                                          bound="nonnegative")

  def check(self):
    """Raises ValueError naming the first field whose value cannot work."""
    super().check()
    if self.profile_steps and (len(self.profile_steps) != 2
                               or self.profile_steps[0] > self.profile_steps[1]):
      raise ValueError(f"profile_steps={','.join(map(str, self.profile_steps))}: give START,END "
                       "with START <= END, such as 10,20.")


@dataclasses.dataclass(frozen=True)
class Config:
  """A whole run: what data, input, model and optimization (the result) and how to run it."""
  data: DataConfig = DataConfig()
  input: InputConfig = InputConfig()
  model: ModelConfig = ModelConfig()
  training: TrainingConfig = TrainingConfig()
  run: RunConfig = RunConfig()

  def result_identity(self):
    """What the trained weights depend on: all but `run` and prepare's own options.

    A resumed run must agree with its checkpoints on all of it.
    """
    return {"vocab_size": self.data.vocab_size,
            **{name: dataclasses.asdict(getattr(self, name))
               for name in ("input", "model", "training")}}


def per_replica_batch_size(global_batch_size, num_replicas):
  """The reviews each of `num_replicas` replicas gets of a global batch.

  Raises:
    UserInputError: unless the global batch divides evenly among them.
  """
  if global_batch_size % num_replicas:
    raise UserInputError(
        f"--global_batch_size={global_batch_size} does not divide evenly among {num_replicas} "
        f"replicas; use a multiple of {num_replicas}.")
  return global_batch_size // num_replicas


def flattened(values):
  """{"section.field": value} of a dict of sections (dicts) and top-level values."""
  flat = {}
  for key, value in values.items():
    if isinstance(value, dict):
      flat.update({f"{key}.{name}": item for name, item in value.items()})
    else:
      flat[key] = value
  return flat


def sections(config):
  """The section objects of a Config, in order."""
  return [getattr(config, field.name) for field in dataclasses.fields(config)]


def field_sections():
  """Maps every field name to the name of the Config section that holds it."""
  return {field.name: section.name for section in dataclasses.fields(Config)
          for field in dataclasses.fields(section.type)}


def override(config, **values):
  """`config` with the named fields (of any section) replaced.

  Raises:
    TypeError: naming a field that no section has.
  """
  owners = field_sections()
  unknown = sorted(set(values) - set(owners))
  if unknown:
    raise TypeError(f"No config field named {unknown}; the fields are {sorted(owners)}.")
  changes = {}
  for name, value in values.items():
    changes.setdefault(owners[name], {})[name] = value
  return dataclasses.replace(config, **{
      section: dataclasses.replace(getattr(config, section), **fields)
      for section, fields in changes.items()})


def preset_names():
  """The names of the presets: the modules of trainer.configs."""
  configs = importlib.import_module("trainer.configs")
  return sorted(module.name for module in pkgutil.iter_modules(configs.__path__))


def get_preset(name):
  """Returns the named preset's Config, or raises ValueError listing the names."""
  if name not in preset_names():
    raise ValueError(f"Unknown preset {name!r}; choose one of {preset_names()}.")
  return importlib.import_module(f"trainer.configs.{name}").get_config()
