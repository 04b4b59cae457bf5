"""Cluster configuration and the chief, without starting a cluster."""

import json
import socket
import threading
import time
import types

import pytest
import tensorflow as tf

from trainer.cluster import peers
from trainer.cluster import resolve
from trainer.cluster import strategy as distribution
from trainer import errors
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


# --- Every way a cluster describes itself.

KUBEFLOW_TF_CONFIG = {"cluster": {"worker": ["w-0:2222", "w-1:2222"]},
                      "task": {"type": "worker", "index": 1}}
VERTEX_TF_CONFIG = {"cluster": {"chief": ["c-0:2222"], "worker": ["w-0:2222", "w-1:2222"],
                                "evaluator": ["e-0:2222"]},
                    "task": {"type": "worker", "index": 0}, "environment": "cloud", "job": {}}
VERTEX_CLUSTER_SPEC = {"cluster": {"workerpool0": ["c-0:2222"],
                                   "workerpool1": ["w-0:2222", "w-1:2222"],
                                   "workerpool3": ["e-0:2222"]},
                       "task": {"type": "workerpool1", "index": 0, "trial": ""},
                       "environment": "cloud", "job": {}}
INDEXED_JOB = {"JOB_COMPLETION_INDEX": "1", "TRAINER_NUM_WORKERS": "3",
               "TRAINER_WORKER_ADDRESS_TEMPLATE": "imdb-train-{index}.imdb-train-workers:2222"}
INDEXED_ADDRESSES = [f"imdb-train-{i}.imdb-train-workers:2222" for i in range(3)]
VERTEX_SPEC = {"chief": ["c-0:2222"], "worker": ["w-0:2222", "w-1:2222"]}
Options = resolve.ClusterOptions


@pytest.mark.parametrize("environ, options, spec, task_type, task_index, source", [
    ({"TF_CONFIG": json.dumps(KUBEFLOW_TF_CONFIG)}, Options(),
     KUBEFLOW_TF_CONFIG["cluster"], "worker", 1, "TF_CONFIG"),
    ({"TF_CONFIG": json.dumps({**VERTEX_TF_CONFIG, "task": {"type": "chief", "index": 0}})},
     Options(), VERTEX_SPEC, "chief", 0, "TF_CONFIG"),
    ({"CLUSTER_SPEC": json.dumps(VERTEX_CLUSTER_SPEC)}, Options(),
     VERTEX_SPEC, "worker", 0, "CLUSTER_SPEC"),
    ({"TF_CONFIG": json.dumps(VERTEX_TF_CONFIG), "CLUSTER_SPEC": json.dumps(VERTEX_CLUSTER_SPEC)},
     Options(), VERTEX_SPEC, "worker", 0, "TF_CONFIG"),
    (INDEXED_JOB, Options(), {"worker": INDEXED_ADDRESSES}, "worker", 1,
     "TRAINER_WORKER_ADDRESS_TEMPLATE, TRAINER_NUM_WORKERS, JOB_COMPLETION_INDEX"),
    ({}, Options(worker_address_template="imdb-train-{index}.imdb-train-workers:2222", num_workers=3,
                 worker_index=2), {"worker": INDEXED_ADDRESSES}, "worker", 2,
     "--worker_address_template, --num_workers, --worker_index"),
    ({}, Options(cluster_workers=("10.0.0.5:2222", "10.0.0.6:2222"), worker_index=0),
     {"worker": ["10.0.0.5:2222", "10.0.0.6:2222"]}, "worker", 0,
     "--cluster_workers, --worker_index"),
    ({**INDEXED_JOB, "JOB_COMPLETION_INDEX": "0"}, Options(worker_index=2, num_workers=3),
     {"worker": INDEXED_ADDRESSES}, "worker", 2,
     "TRAINER_WORKER_ADDRESS_TEMPLATE, --num_workers, --worker_index"),
], ids=["tf_config_workers", "tf_config_chief", "cluster_spec", "vertex_both", "indexed_job",
        "flags_template", "flags_list", "flags_override_environment"])
def test_every_cluster_description_resolves(monkeypatch, environ, options, spec, task_type,
                                            task_index, source):
  """TF_CONFIG (worker or chief), CLUSTER_SPEC, an Indexed Job and flags give one cluster, and
  the TF_CONFIG written from it tells TensorFlow the same."""
  cluster = resolve.resolve_cluster(options, environ)
  assert (cluster.spec, cluster.task_type, cluster.task_index) == (spec, task_type, task_index)
  assert cluster.source == source
  assert cluster.address == spec[task_type][task_index]
  assert cluster.num_workers == sum(len(addresses) for addresses in spec.values())
  monkeypatch.setenv("TF_CONFIG", json.dumps(cluster.tf_config()))
  resolver = tf.distribute.cluster_resolver.TFConfigClusterResolver()
  assert resolver.cluster_spec().as_dict() == spec
  assert (resolver.task_type, resolver.task_id) == (task_type, task_index)


@pytest.mark.parametrize("environ", [
    {}, {"JOB_COMPLETION_INDEX": "3"}, {"TF_CONFIG": json.dumps({"cluster": {}, "task": {}})}],
                         ids=["nothing", "indexed_job_without_cluster", "empty_tf_config"])
def test_no_cluster_is_one_process(environ):
  """Without a description of training tasks there is no cluster."""
  assert resolve.resolve_cluster(Options(), environ) is None


@pytest.mark.parametrize("environ, options, message", [
    ({**INDEXED_JOB, "JOB_COMPLETION_INDEX": "3"}, Options(),
     "JOB_COMPLETION_INDEX=3 is out of range: .* give 3 workers, numbered 0 to 2. An Indexed Job "
     "needs completions and parallelism equal to TRAINER_NUM_WORKERS"),
    ({}, Options(cluster_workers=("a:1", "b:1"), worker_index=2), "--worker_index=2 is out of range"),
    ({"JOB_COMPLETION_INDEX": "0", "TRAINER_WORKER_ADDRESS_TEMPLATE": "w-{index}:2222"},
     Options(), "TRAINER_WORKER_ADDRESS_TEMPLATE needs the number of workers: set "
     "TRAINER_NUM_WORKERS or --num_workers"),
    ({"JOB_COMPLETION_INDEX": "0", "TRAINER_NUM_WORKERS": "2"}, Options(),
     "TRAINER_NUM_WORKERS needs the workers' addresses: set TRAINER_WORKER_ADDRESS_TEMPLATE"),
    ({key: value for key, value in INDEXED_JOB.items() if key != "JOB_COMPLETION_INDEX"},
     Options(), "does not know which worker it is: .*completionMode: Indexed.*--worker_index"),
    ({**INDEXED_JOB, "TRAINER_NUM_WORKERS": "two"}, Options(),
     "TRAINER_NUM_WORKERS='two' is not a whole number"),
    ({**INDEXED_JOB, "TRAINER_NUM_WORKERS": "0"}, Options(),
     "TRAINER_NUM_WORKERS=0: a cluster needs at least 1 worker"),
    ({**INDEXED_JOB, "TRAINER_WORKER_ADDRESS_TEMPLATE": "imdb-train:2222"}, Options(),
     "has no {index}, so every worker would get the same address"),
    ({**INDEXED_JOB, "TRAINER_WORKER_ADDRESS_TEMPLATE": "imdb-train-{index}"}, Options(),
     "worker 0: 'imdb-train-0' is not host:port"),
    ({}, Options(cluster_workers=("a:1", "b:1"), num_workers=3, worker_index=0),
     "--num_workers=3, but --cluster_workers lists 2 workers"),
    (INDEXED_JOB, Options(cluster_workers=("a:1", "b:1")), "--cluster_workers or "
     "TRAINER_WORKER_ADDRESS_TEMPLATE, not both"),
    ({"TF_CONFIG": json.dumps({**KUBEFLOW_TF_CONFIG, "task": {"type": "worker", "index": 2}})},
     Options(), "TF_CONFIG makes this process worker 2, but the cluster has 2 worker task"),
    ({"TF_CONFIG": json.dumps({**VERTEX_TF_CONFIG, "task": {"type": "evaluator", "index": 0}})},
     Options(), "TF_CONFIG makes this process a 'evaluator' task, but this job only trains"),
    ({"TF_CONFIG": json.dumps({"cluster": {"worker": ["a:1", "a:1"]},
                               "task": {"type": "worker", "index": 0}})},
     Options(), "TF_CONFIG gives a:1 to both worker 0 and worker 1"),
    ({"CLUSTER_SPEC": "{not json"}, Options(), "CLUSTER_SPEC is not valid JSON"),
    ({"TF_CONFIG": json.dumps(KUBEFLOW_TF_CONFIG), **INDEXED_JOB}, Options(),
     "TF_CONFIG and TRAINER_WORKER_ADDRESS_TEMPLATE, .* describe different clusters"),
], ids=["index_out_of_range", "flag_index_out_of_range", "missing_count", "missing_addresses",
        "missing_index", "count_not_a_number", "no_workers", "template_without_index",
        "template_without_port", "list_and_count_disagree", "list_and_template",
        "tf_config_index_out_of_range", "evaluator_task", "shared_address", "bad_cluster_spec",
        "descriptions_disagree"])
def test_bad_cluster_descriptions_are_explained(environ, options, message):
  """Each mistake in a cluster description gets an error naming it and the fix."""
  with pytest.raises(UserInputError, match=message):
    resolve.resolve_cluster(options, environ)


def test_one_process_strategy_in_a_cluster_is_refused(monkeypatch):
  """--strategy=mirrored in a cluster of 3 would train 3 separate models: refused."""
  for name, value in INDEXED_JOB.items():
    monkeypatch.setenv(name, value)
  with pytest.raises(UserInputError, match="--strategy=mirrored trains in one process, but "
                     ".* describes 3 workers: use --strategy=multi_worker or auto"):
    distribution.build_strategy("mirrored")


# --- Waiting for the peers (loopback only).


def free_port():
  """A loopback port that was free a moment ago."""
  with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    return s.getsockname()[1]


def loopback_cluster(index, ports):
  """Worker `index` of a cluster of workers at 127.0.0.1:<port>."""
  return resolve.Cluster({"worker": [f"127.0.0.1:{port}" for port in ports]}, "worker",
                              index, "the test")


def test_workers_starting_apart_find_each_other():
  """Two workers, the second starting later, both get through the wait; each then serves its
  port the way TensorFlow's server would, and a peer still waiting reaches that server."""
  ports = [free_port(), free_port()]
  finished = threading.Barrier(3, timeout=30)
  errors = []

  def worker(index, delay):
    """Waits for the peer, then listens on its own port (as its gRPC server) until both are done."""
    time.sleep(delay)
    try:
      peers.wait_for_peers(loopback_cluster(index, ports), 20, poll_seconds=0.05)
      with socket.create_server(("", ports[index])):
        finished.wait()
    except Exception as e:  # pylint: disable=broad-except
      errors.append(e)
      finished.abort()

  threads = [threading.Thread(target=worker, args=(index, delay), daemon=True)
             for index, delay in ((0, 0.0), (1, 1.0))]
  for thread in threads:
    thread.start()
  finished.wait()
  for thread in threads:
    thread.join(timeout=30)
  assert not errors


def test_missing_peer_times_out_naming_it():
  """A peer that never listens ends the wait after the timeout, with its name and address."""
  ports = [free_port(), free_port()]
  start = time.monotonic()
  with pytest.raises(errors.PeersMissing, match=rf"1 of 1 peers never answered within 0.5 s "
                     rf"\(--cluster_wait_seconds\): worker 1 at 127.0.0.1:{ports[1]} "
                     r"\(no connection: Connection refused\)"):
    peers.wait_for_peers(loopback_cluster(0, ports), 0.5, poll_seconds=0.05)
  assert time.monotonic() - start < 10


def test_unresolved_peer_name_is_reported(monkeypatch):
  """A peer whose name does not resolve (yet) is named with that reason."""
  real_getaddrinfo = socket.getaddrinfo

  def getaddrinfo(host, *args, **kwargs):
    """No DNS records for the peer's name; loopback as usual."""
    if host == "imdb-train-1.imdb-train-workers":
      raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")
    return real_getaddrinfo(host, *args, **kwargs)

  monkeypatch.setattr(socket, "getaddrinfo", getaddrinfo)
  cluster = resolve.Cluster(
      {"worker": [f"127.0.0.1:{free_port()}", "imdb-train-1.imdb-train-workers:2222"]},
      "worker", 0, "the test")
  with pytest.raises(errors.PeersMissing, match="worker 1 at imdb-train-1.imdb-train-workers:2222 "
                     r"\(the name imdb-train-1.imdb-train-workers does not resolve"):
    peers.wait_for_peers(cluster, 0.2, poll_seconds=0.05)


def test_own_port_in_use_is_explained():
  """A worker whose port is taken says so instead of waiting."""
  with socket.create_server(("", 0)) as taken:
    port = taken.getsockname()[1]
    with pytest.raises(UserInputError, match=f"cannot listen on port {port}"):
      peers.wait_for_peers(loopback_cluster(0, [port, free_port()]), 5)
