"""Every way a cluster describes itself (TF_CONFIG, CLUSTER_SPEC, an Indexed Job, flags)."""

import json

import pytest
import tensorflow as tf

from trainer.cluster import resolve
from trainer.errors import UserInputError

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
