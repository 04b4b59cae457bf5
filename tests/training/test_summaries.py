"""TensorBoard output, read back with TensorBoard's own loader: runs, tags, hparams, profiler."""

import glob
import time

import pytest
from tensorboard.backend.event_processing import plugin_event_multiplexer
from tensorboard.plugins.hparams import api_pb2
from tensorboard.plugins.hparams import metadata as hparams_metadata
from tensorboard.plugins.hparams import metrics as hparams_metrics
from tensorboard.util import tensor_util
import tensorflow as tf

from trainer import config as config_lib
from trainer.training import summaries as summaries_lib
from trainer.training import train_log

CONFIG = config_lib.override(config_lib.Config(), rnn_units=(8, 4), learning_rate=0.01)


def load(logdir):
  """TensorBoard's view of `logdir`: a multiplexer over its runs."""
  multiplexer = plugin_event_multiplexer.EventMultiplexer()
  multiplexer.AddRunsFromDirectory(str(logdir))
  multiplexer.Reload()
  return multiplexer


def scalar_runs(multiplexer):
  """{run: {tag: [(step, value), ...]}} of the scalar summaries."""
  runs = {}
  for run, tags in multiplexer.PluginRunToTagToContent("scalars").items():
    runs[run] = {tag: [(event.step, pytest.approx(float(tensor_util.make_ndarray(
        event.tensor_proto)))) for event in multiplexer.Tensors(run, tag)] for tag in tags}
  return runs


def hparams_content(multiplexer, tag, session):
  """The hparams plugin data of `tag`, which only the run `session` holds."""
  runs = {run: tags[tag] for run, tags in
          multiplexer.PluginRunToTagToContent(hparams_metadata.PLUGIN_NAME).items() if tag in tags}
  assert list(runs) == [session]
  return runs[session]


def test_splits_are_runs_with_the_same_tags(tmp_path):
  """Train, validation and test are runs of their own, so `loss` of each overlays on one chart."""
  with summaries_lib.Summaries(str(tmp_path), enabled=True) as summaries:
    for step in (1, 2, 3, 4):
      summaries.scalars("train", {"loss": 1.0 / step, "accuracy": 0.1 * step}, step)
    summaries.scalars("validation", {"loss": 0.6, "accuracy": 0.7, "examples": 10}, 2)
    summaries.scalars("validation", {"loss": 0.4, "accuracy": 0.8, "examples": 10}, 4)
    summaries.scalars("test", {"loss": 0.5, "note": "not a number"}, 4)
  runs = scalar_runs(load(tmp_path))
  assert set(runs) == {"train", "validation", "test"}
  assert runs["train"]["loss"] == [(1, 1.0), (2, 0.5), (3, 1 / 3), (4, 0.25)]
  assert runs["validation"]["loss"] == [(2, 0.6), (4, 0.4)]
  assert set(runs["validation"]) == {"loss", "accuracy", "examples"}
  assert set(runs["test"]) == {"loss"}
  with pytest.raises(ValueError, match="split='eval'"):
    summaries_lib.Summaries(str(tmp_path), enabled=True).scalars("eval", {"loss": 1.0}, 1)


def test_train_log_and_evaluations_write_through_summaries(tmp_path):
  """TrainLog's interval statistics go to the train run, an evaluation to its split's run."""
  with summaries_lib.Summaries(str(tmp_path), enabled=True) as summaries:
    log = train_log.TrainLog(total_steps=4, start_step=0, global_batch_size=2,
                             show_progress_bar=False, summaries=summaries)
    for step in (1, 2):
      log.add(step, loss_sum=tf.constant(1.0), correct=tf.constant(1), input_seconds=0.0)
    log.flush(2, learning_rate=0.01)
    train_log.log_evaluation(summaries, "validation", {"loss": 0.3, "accuracy": 0.9}, 2)
  runs = scalar_runs(load(tmp_path))
  assert set(runs["train"]) == set(train_log.TRAIN_SCALARS)
  assert runs["train"]["loss"] == [(2, 0.5)] and runs["train"]["learning_rate"] == [(2, 0.01)]
  assert runs["validation"] == {"loss": [(2, 0.3)], "accuracy": [(2, 0.9)]}


def test_rates_leave_out_evaluation_and_saving_time(tmp_path):
  """Time spent inside `excluded()` (evaluating, saving) counts in no examples/s or ETA."""
  with summaries_lib.Summaries(str(tmp_path), enabled=False) as summaries:
    log = train_log.TrainLog(total_steps=4, start_step=0, global_batch_size=1000,
                             show_progress_bar=False, summaries=summaries)
    log.add(1, loss_sum=tf.constant(1.0), correct=tf.constant(1), input_seconds=0.0)
    with log.excluded():
      time.sleep(0.5)
    stats = log.flush(1, learning_rate=0.01)
  assert stats["examples_per_s"] > 1000 / 0.1  # 2,000/s if the 0.5 s had counted.


def test_hparams_list_the_config_and_the_metrics_of_each_split(tmp_path):
  """The HParams dashboard finds the config fields and reads each metric from its split's run.

  TensorBoard looks at the parent of the run's logdir, as when it compares runs.
  """
  with summaries_lib.Summaries(str(tmp_path / "run"), enabled=True) as summaries:
    summaries.hparams(CONFIG, config_lib.METRIC_NAMES)
    summaries.scalars("validation", {name: 0.5 for name in config_lib.METRIC_NAMES}, 3)
    summaries.scalars("test", {name: 0.5 for name in config_lib.METRIC_NAMES}, 3)
    summaries.scalars("train", {"loss": 0.5, "accuracy": 0.5}, 3)
  multiplexer = load(tmp_path)
  start = hparams_metadata.parse_session_start_info_plugin_data(
      hparams_content(multiplexer, hparams_metadata.SESSION_START_INFO_TAG, "run"))
  assert set(start.hparams) == set(summaries_lib.flat_hparams(CONFIG))
  assert start.hparams["model.rnn_units"].string_value == "8,4"
  assert start.hparams["training.learning_rate"].number_value == pytest.approx(0.01)
  assert start.hparams["data.vocab_size"].number_value == CONFIG.data.vocab_size
  assert start.hparams["run.deterministic"].bool_value is False
  experiment = hparams_metadata.parse_experiment_plugin_data(
      hparams_content(multiplexer, hparams_metadata.EXPERIMENT_TAG, "run"))
  assert {info.name for info in experiment.hparam_infos} == set(start.hparams)
  declared = [(info.name.group, info.name.tag) for info in experiment.metric_infos]
  assert set(declared) == {(split, name) for split in ("validation", "test")
                           for name in config_lib.METRIC_NAMES} | {("train", "loss"),
                                                                   ("train", "accuracy")}
  runs = scalar_runs(multiplexer)
  for group, tag in declared:  # Where the dashboard looks for the value of each metric.
    run, tag = hparams_metrics.run_tag_from_session_and_metric(
        "run", api_pb2.MetricName(group=group, tag=tag))
    assert runs[run][tag] == [(3, 0.5)]


def test_not_enabled_writes_nothing(tmp_path):
  """A worker other than the chief writes no summaries and no trace."""
  logdir = tmp_path / "tensorboard"
  with summaries_lib.Summaries(str(logdir), enabled=False) as summaries:
    summaries.scalars("train", {"loss": 1.0}, 1)
    summaries.hparams(CONFIG, config_lib.METRIC_NAMES)
  run_steps(summaries_lib.Profiler(str(logdir), (1, 2), enabled=False), range(1, 4))
  assert not logdir.exists()


def run_steps(profiler, steps):
  """Runs a tiny TensorFlow op as each step, then closes the profiler.

  Returns:
    Whether the profiler traced each step.
  """
  traced = []
  with profiler:
    for step in steps:
      profiler.before_step(step)
      traced.append(profiler.active)
      tf.reduce_sum(tf.random.uniform([8, 8]) @ tf.ones([8, 8])).numpy()
      profiler.after_step(step)
  assert not profiler.active
  return traced


def traces(logdir):
  """The profiler traces (XPlane files) written under `logdir`."""
  return glob.glob(str(logdir / "plugins" / "profile" / "*" / "*.xplane.pb"))


@pytest.mark.parametrize("profile_steps, last_step, traced", [
    ((2, 3), 4, [False, True, True, False]),
    ((), 4, [False] * 4),
    ((2, 10), 3, [False, True, True]),  # The run ends inside the range: close() writes it.
])
def test_profiler_traces_the_steps_of_its_range(tmp_path, profile_steps, last_step, traced):
  """A trace of steps START..END goes to <logdir>/plugins/profile/; none without a range."""
  profiler = summaries_lib.Profiler(str(tmp_path), profile_steps, enabled=True)
  assert run_steps(profiler, range(1, last_step + 1)) == traced
  assert bool(traces(tmp_path)) == any(traced)
