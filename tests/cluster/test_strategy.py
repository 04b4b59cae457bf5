"""The strategy of a process and which process is the chief, without starting a cluster."""

import json
import types

import pytest
import tensorflow as tf

from tests.cluster.test_resolve import INDEXED_JOB
from trainer.cluster import resolve
from trainer.cluster import strategy as distribution
from trainer.errors import UserInputError


def fake_strategy(cluster, task_type, task_id):
  """An object with the cluster_resolver of a multi-worker strategy."""
  resolver = types.SimpleNamespace(
      task_type=task_type, task_id=task_id,
      cluster_spec=lambda: tf.train.ClusterSpec(cluster))
  return types.SimpleNamespace(cluster_resolver=resolver)


@pytest.mark.parametrize("cluster, task_type, task_id, chief", [
    ({"worker": ["a:1", "b:1"]}, "worker", 0, True),
    ({"worker": ["a:1", "b:1"]}, "worker", 1, False),
    ({"chief": ["c:1"], "worker": ["a:1"]}, "chief", 0, True),
    ({"chief": ["c:1"], "worker": ["a:1"]}, "worker", 0, False),
])
def test_chief_is_the_chief_task_or_worker_0(cluster, task_type, task_id, chief):
  """The chief task when there is one, else worker 0."""
  strategy = fake_strategy(cluster, task_type, task_id)
  assert distribution.is_chief(strategy) is chief
  assert distribution.num_workers(strategy) == sum(len(v) for v in cluster.values())


def test_single_process_is_the_chief():
  """Without a cluster, the one process is the chief."""
  strategy = tf.distribute.get_strategy()
  assert distribution.is_chief(strategy) and distribution.num_workers(strategy) == 1


def test_auto_without_cluster_or_gpus_is_one_device(monkeypatch):
  """auto picks one device when there is no TF_CONFIG and no GPU."""
  monkeypatch.delenv("TF_CONFIG", raising=False)
  assert isinstance(distribution.build_strategy("auto"), tf.distribute.OneDeviceStrategy)


@pytest.mark.parametrize("raw, message", [
    ("{not json", "TF_CONFIG is not valid JSON"),
    (json.dumps({"cluster": {}}), 'needs "cluster" and "task"'),
])
def test_bad_tf_config_is_explained(monkeypatch, raw, message):
  """A malformed TF_CONFIG is named, not a stack trace deep in TensorFlow."""
  monkeypatch.setenv("TF_CONFIG", raw)
  with pytest.raises(UserInputError, match=message):
    resolve.cluster_config()


def test_unknown_strategy_is_refused():
  """--strategy must be one of the choices."""
  with pytest.raises(UserInputError, match="--strategy=tpu: choose one of"):
    distribution.build_strategy("tpu")


def test_one_process_strategy_in_a_cluster_is_refused(monkeypatch):
  """--strategy=mirrored in a cluster of 3 would train 3 separate models: refused."""
  for name, value in INDEXED_JOB.items():
    monkeypatch.setenv(name, value)
  with pytest.raises(UserInputError, match="--strategy=mirrored trains in one process, but "
                     ".* describes 3 workers: use --strategy=multi_worker or auto"):
    distribution.build_strategy("mirrored")
