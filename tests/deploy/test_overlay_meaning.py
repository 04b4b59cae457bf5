"""What the rendered overlays mean on a cluster, beyond their schemas (issue 20).

The order of the pod failure rules, names that no two overlays share, the global batch against
every documented number of hosts, the success of a Job once its chief succeeded, the bound of a
JobSet's time, the clean-up commands, and the Kueue and preflight components.
"""

import re

import kubernetes_validate
import pytest

from trainer import errors
from trainer.testing.manifests import environment_of
from trainer.testing.manifests import GPU_OVERLAYS
from trainer.testing.manifests import JOB_OVERLAYS
from trainer.testing.manifests import job_specs_of
from trainer.testing.manifests import KUBERNETES_VERSION
from trainer.testing.manifests import load_yaml
from trainer.testing.manifests import load_yaml_documents
from trainer.testing.manifests import main_container_of
from trainer.testing.manifests import objects_of_kind
from trainer.testing.manifests import OVERLAYS
from trainer.testing.manifests import pod_templates_of
from trainer.testing.manifests import quantity_bytes
from trainer.testing.manifests import REPO
from trainer.testing.manifests import schema_validator
from trainer.testing.manifests import workload_of

SHARED_KINDS = ("ServiceAccount", "ConfigMap", "NetworkPolicy")  # From base: the same in all.
MULTI_WORKER_OVERLAYS = ("multi-host", "jobset", "tfjob", "retrain")
TRAINING_OVERLAYS = ("single-host", "multi-host", "jobset", "tfjob")
K8S_README = (REPO / "k8s" / "README.md").read_text()
CHIEF_SUCCEEDS = {"rules": [{"succeededIndexes": "0"}]}
DISRUPTION_RULE = {"action": "Ignore", "onPodConditions": [{"type": "DisruptionTarget"}]}


def _own_objects(objects):
  """(kind, name) of what an overlay creates besides base's shared objects."""
  return {(o["kind"], o["metadata"]["name"]) for o in objects if o["kind"] not in SHARED_KINDS}


def _flags(arguments):
  """{flag: value} of a command's --flag=value arguments."""
  return dict(argument.split("=", 1) for argument in arguments if "=" in argument)


# --- Exit codes and disruptions.


@pytest.mark.parametrize("overlay", JOB_OVERLAYS)
def test_a_disruption_is_ignored_before_any_exit_code_rule(rendered, overlay):
  """The first matching rule wins: a drained pod that exits 2 must not fail the Job."""
  (job,) = job_specs_of(workload_of(rendered[overlay]))
  rules = job["podFailurePolicy"]["rules"]
  assert rules[0] == DISRUPTION_RULE, rules
  assert [rule for rule in rules if rule["action"] == "FailJob"]
  assert errors.RETRY_EXIT_CODE not in [c for r in rules for c in r.get("onExitCodes", {}).get(
      "values", [])]  # Storage unavailable, peers missing: retried, counted.


# --- Names.


def _without_labels(resource):
  """An object without its labels (they name the overlay that applied it last)."""
  metadata = {k: v for k, v in resource["metadata"].items() if k != "labels"}
  return {**resource, "metadata": metadata}


def test_no_two_overlays_create_an_object_of_the_same_name(rendered):
  """Applying one overlay never changes another's objects; base's shared objects are identical."""
  seen = {}
  for overlay, objects in rendered.items():
    for name in _own_objects(objects):
      assert name not in seen, f"{overlay} and {seen[name]} both create {name}"
      seen[name] = overlay
  shared = [sorted((_without_labels(o) for o in objects if o["kind"] in SHARED_KINDS), key=str)
            for objects in rendered.values()]
  assert all(objects == shared[0] for objects in shared)


def _subdomain_and_hosts(objects):
  """(the DNS subdomain of the workers, the host part of their address template)."""
  workload = workload_of(objects)
  (template, *_) = pod_templates_of(workload)
  if workload["kind"] == "JobSet":
    subdomain = workload["spec"]["network"]["subdomain"]
  else:
    subdomain = template["spec"]["subdomain"]
  address = environment_of(objects, main_container_of(template))[
      "TRAINER_WORKER_ADDRESS_TEMPLATE"]
  return subdomain, address.split(":")[0]


@pytest.mark.parametrize("overlay", ["multi-host", "jobset", "retrain"])
def test_each_multi_worker_overlay_has_its_own_service(rendered, overlay):
  """Its subdomain is its own Service (or the JobSet's), named like its workload; the addresses
  name it."""
  objects = rendered[overlay]
  subdomain, host = _subdomain_and_hosts(objects)
  assert host.endswith(f".{subdomain}")
  assert subdomain == workload_of(objects)["metadata"]["name"]
  others = [_subdomain_and_hosts(rendered[other])[0]
            for other in ("multi-host", "jobset", "retrain") if other != overlay]
  assert subdomain not in others
  services = objects_of_kind(objects, "Service")
  assert [s["metadata"]["name"] for s in services] == ([] if overlay == "jobset" else [subdomain])


def _cleanup_commands():
  """{overlay: the clean-up command of k8s/README.md's table}."""
  return dict(re.findall(r"^\| `([a-z-]+)` \| `(kubectl -n imdb-bilstm delete [^`]+)` \|",
                         K8S_README, re.M))


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_the_readme_cleanup_removes_what_the_overlay_created(rendered, overlay):
  """`kubectl delete <kinds> <name>` of the README names exactly the overlay's own objects."""
  kinds, name = _cleanup_commands()[overlay].split()[-2:]
  assert {(kind.lower(), object_name) for kind, object_name in _own_objects(rendered[overlay])} == {
      (kind, name) for kind in kinds.split(",")}


# --- The global batch, its learning rate, and the number of hosts.


def _documented_host_counts():
  """{GPUs per host: [host counts]} that k8s/README.md says the global batch divides among."""
  counts = {}
  for hosts, gpus in re.findall(r"\*\*([\d, or]+) (?:hosts|workers) of (\d) GPUs?\*\*", K8S_README):
    counts[int(gpus)] = [int(h) for h in re.findall(r"\d+", hosts)]
  return counts


def _multi_worker_runs(rendered):
  """(where, GPUs per host, {flag: value}) of every multi-worker overlay and Vertex spec."""
  runs = []
  for overlay in MULTI_WORKER_OVERLAYS:
    (template,) = pod_templates_of(workload_of(rendered[overlay]))
    container = main_container_of(template)
    runs.append((overlay, int(container["resources"]["limits"]["nvidia.com/gpu"]),
                 _flags(container["args"])))
  for name in ("multi-worker.yaml", "retrain.yaml", "preflight.yaml"):
    for pool in load_yaml(REPO / "vertex" / name)["workerPoolSpecs"]:
      runs.append((f"vertex/{name}", pool["machineSpec"]["acceleratorCount"],
                   _flags(pool["containerSpec"]["args"])))
  return runs


def _scaling_row(batch):
  """(learning rate, warm-up steps) of docs/scaling.md's table for a global batch."""
  table = (REPO / "docs" / "scaling.md").read_text()
  (row,) = [line.split("|")[1:-1] for line in table.splitlines()
            if line.startswith("|") and line.split("|")[4].strip() == str(batch)]
  return float(row[6]), int(row[7])


def test_the_global_batch_divides_among_every_documented_number_of_hosts(rendered):
  """Scaling a multi-worker run by its workers alone keeps an even split, with the documented
  learning rate and warm-up of its batch."""
  counts = _documented_host_counts()
  assert set(counts) == {1, 4}, counts
  for where, gpus, flags in _multi_worker_runs(rendered):
    batch = int(flags["--global_batch_size"])
    for hosts in counts[gpus]:
      assert batch % (hosts * gpus) == 0, f"{where}: {batch} among {hosts} x {gpus} GPUs"
    assert (float(flags["--learning_rate"]), int(flags["--warmup_steps"])) == _scaling_row(
        batch), where


# --- Success once the chief succeeded; bounded time.


@pytest.mark.parametrize("overlay", ["multi-host", "jobset", "retrain"])
def test_the_job_succeeds_when_its_chief_does(rendered, overlay):
  """Index 0's success ends the Job: a worker failing after it cannot fail the run."""
  (job,) = job_specs_of(workload_of(rendered[overlay]))
  assert job["completionMode"] == "Indexed"
  assert job["successPolicy"] == CHIEF_SUCCEEDS


def test_the_tfjob_succeeds_when_worker_0_does(rendered):
  """The operator's default success policy ("") is worker 0's success; "AllWorkers" is not."""
  tfjob = workload_of(rendered["tfjob"])
  assert tfjob["spec"].get("successPolicy", "") == ""
  assert "Chief" not in tfjob["spec"]["tfReplicaSpecs"]  # Worker 0 is the chief.


def test_the_whole_jobset_is_bounded_by_12_hours(rendered):
  """JobSet has no deadline of its own and recreates its Jobs on a restart: every attempt's
  deadline, times the attempts, stays within the 12 hours of the other workloads."""
  spec = workload_of(rendered["jobset"])["spec"]
  (job,) = job_specs_of(workload_of(rendered["jobset"]))
  attempts = 1 + spec["failurePolicy"]["maxRestarts"]
  assert attempts * job["activeDeadlineSeconds"] <= 43200
  assert "DeadlineExceeded" in spec["failurePolicy"]["rules"][0]["onJobFailureReasons"]


# --- CPUs and GPUs of the pods.


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_the_cpu_limit_reaches_the_trainer(rendered, overlay):
  """TRAINER_CPU_LIMIT comes from the container's own CPU limit (the downward API)."""
  for template in pod_templates_of(workload_of(rendered[overlay])):
    container = main_container_of(template)
    assert "cpu" in container["resources"]["limits"]
    assert environment_of(rendered[overlay], container)["TRAINER_CPU_LIMIT"] == {
        "resourceFieldRef": {"resource": "limits.cpu"}}


def test_the_prepare_pod_gets_no_gpu_from_nvidias_runtime(rendered):
  """The CUDA base sets NVIDIA_VISIBLE_DEVICES=all; the CPU-only prepare pod sets void."""
  (template,) = pod_templates_of(workload_of(rendered["prepare"]))
  assert environment_of(rendered["prepare"], main_container_of(template))[
      "NVIDIA_VISIBLE_DEVICES"] == "void"


# --- Components: Kueue and preflight.


KUEUE = REPO / "k8s" / "components" / "kueue"
CUSTOM_SCHEMAS = {"JobSet": "jobset-v1alpha2.schema.yaml", "TFJob": "tfjob-v1.schema.yaml",
                  "LocalQueue": "kueue-v1beta2.schema.yaml"}


def _kueue_validator():
  """The vendored schema of Kueue's v1beta2 objects."""
  return schema_validator(REPO / "k8s" / "schemas" / "kueue-v1beta2.schema.yaml")


def _queue_label(workload):
  """The queue label Kueue reads on a workload (a CronJob: on the Jobs it creates)."""
  metadata = (workload["spec"]["jobTemplate"]["metadata"] if workload["kind"] == "CronJob"
              else workload["metadata"])
  return metadata["labels"].get("kueue.x-k8s.io/queue-name")


def _validate(objects):
  """Validates rendered objects: built-in kinds strictly, the others against vendored schemas."""
  for resource in objects:
    if resource["kind"] in CUSTOM_SCHEMAS:
      schema_validator(REPO / "k8s" / "schemas" / CUSTOM_SCHEMAS[resource["kind"]]).validate(
          resource)
    else:
      kubernetes_validate.validate(resource, KUBERNETES_VERSION, strict=True)


@pytest.mark.parametrize("overlay", GPU_OVERLAYS)
def test_kueue_component_queues_the_workload(overlay, composed):
  """The workload carries the queue label of the LocalQueue the component adds, which points at
  the cluster queue; every object validates."""
  objects = composed(overlay, "kueue")
  _validate(objects)
  (local_queue,) = objects_of_kind(objects, "LocalQueue")
  assert _queue_label(workload_of(objects)) == local_queue["metadata"]["name"]
  assert local_queue["metadata"]["namespace"] == workload_of(objects)["metadata"]["namespace"]
  (cluster_queue,) = [o for o in load_yaml_documents(KUEUE / "cluster-queue.yaml")
                      if o["kind"] == "ClusterQueue"]
  assert local_queue["spec"]["clusterQueue"] == cluster_queue["metadata"]["name"]


def test_kueue_cluster_queue_admits_each_gpu_workload_whole(rendered):
  """The flavors match the pods' GPU node selectors; every resource the pods request is covered,
  with quota for all the pods of one workload at once (gang admission)."""
  documents = load_yaml_documents(KUEUE / "cluster-queue.yaml")
  validator = _kueue_validator()
  for document in documents:
    validator.validate(document)
  flavors = {d["metadata"]["name"]: d["spec"]["nodeLabels"] for d in documents
             if d["kind"] == "ResourceFlavor"}
  (cluster_queue,) = [d for d in documents if d["kind"] == "ClusterQueue"]
  (group,) = cluster_queue["spec"]["resourceGroups"]
  quotas = {flavor["name"]: {r["name"]: r["nominalQuota"] for r in flavor["resources"]}
            for flavor in group["flavors"]}
  for flavor in group["flavors"]:  # The CRD's rule: each flavor lists the group's resources.
    assert [r["name"] for r in flavor["resources"]] == group["coveredResources"]
  assert set(quotas) == set(flavors)
  for overlay in GPU_OVERLAYS:
    workload = workload_of(rendered[overlay])
    (template,) = pod_templates_of(workload)
    (flavor,) = [name for name, labels in flavors.items()
                 if labels.items() <= template["spec"]["nodeSelector"].items()]
    requests = main_container_of(template)["resources"]["requests"]
    assert set(requests) <= set(group["coveredResources"]), overlay
    pods = (job_specs_of(workload) or [{"parallelism": workload["spec"]["tfReplicaSpecs"][
        "Worker"]["replicas"]}])[0].get("parallelism", 1)
    for resource, amount in requests.items():
      quota = quotas[flavor][resource]
      if resource == "cpu" or resource.endswith("gpu"):
        assert pods * int(amount) <= int(quota), f"{overlay}: {pods} x {resource}"
      else:
        assert pods * quantity_bytes(amount) <= quantity_bytes(quota), f"{overlay}: {resource}"


def test_the_kueue_schema_is_not_vacuous():
  """A misspelt field, a namespaced ClusterQueue and a bad name each fail the vendored schema."""
  validator = _kueue_validator()
  documents = load_yaml_documents(KUEUE / "cluster-queue.yaml")
  (cluster_queue,) = [d for d in documents if d["kind"] == "ClusterQueue"]
  assert validator.is_valid(cluster_queue)
  assert not validator.is_valid({**cluster_queue, "spec": {**cluster_queue["spec"], "cohort": "a"}})
  assert not validator.is_valid({**cluster_queue, "metadata": {"name": "q", "namespace": "n"}})
  local_queue = load_yaml(KUEUE / "local-queue.yaml")
  assert validator.is_valid(local_queue)
  assert not validator.is_valid({**local_queue, "spec": {"clusterQueue": "Not_A_Name"}})


def _without_command(template):
  """A pod template with its container's command (and the component label) left out."""
  spec = dict(template["spec"])
  spec["containers"] = [{k: v for k, v in c.items() if k != "command"} for c in spec["containers"]]
  labels = {k: v for k, v in template["metadata"]["labels"].items()
            if k != "app.kubernetes.io/component"}
  return {"metadata": {**template["metadata"], "labels": labels}, "spec": spec}


@pytest.mark.parametrize("overlay", TRAINING_OVERLAYS)
def test_preflight_component_runs_the_training_pods_exact_spec(rendered, overlay, composed):
  """Only the command changes, to trainer.preflight: image, resources, nodes, env, arguments and
  names are the training pods'."""
  objects = composed(overlay, "preflight")
  _validate(objects)
  (checked,) = pod_templates_of(workload_of(objects))
  (trained,) = pod_templates_of(workload_of(rendered[overlay]))
  assert main_container_of(checked)["command"] == ["python", "-m", "trainer.preflight"]
  assert _without_command(checked) == _without_command(trained)
  assert _own_objects(objects) == _own_objects(rendered[overlay])


def test_vertex_preflight_runs_the_multi_worker_machines_and_arguments():
  """vertex/preflight.yaml: multi-worker.yaml's pools, with the preflight as the command."""
  preflight = load_yaml(REPO / "vertex" / "preflight.yaml")
  training = load_yaml(REPO / "vertex" / "multi-worker.yaml")
  schema_validator(REPO / "vertex" / "schemas" / "custom-job-spec.schema.yaml").validate(preflight)
  assert preflight["serviceAccount"] == training["serviceAccount"]
  assert preflight["scheduling"]["disableRetries"] is True
  for checked, trained in zip(preflight["workerPoolSpecs"], training["workerPoolSpecs"],
                              strict=True):
    container = dict(checked["containerSpec"])  # Pool 1 shares pool 0's (a YAML alias).
    assert container.pop("command") == ["python", "-m", "trainer.preflight"]
    assert {**checked, "containerSpec": container} == trained
