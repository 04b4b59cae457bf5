"""Deployment manifests: the k8s/ overlays and the vertex/ job specs.

Each overlay is rendered with `kubectl kustomize` (those tests skip where kubectl is missing,
and fail under CI);
every rendered object is validated against the Kubernetes schemas of a current release
(kubernetes-validate), the JobSet and the TFJob against the vendored schemas of their CRDs.
checkov's Kubernetes checks are in test_linters.py; docker/test_image.sh runs the pods.
"""

import json
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
from trainer.testing.manifests import main_container_of
from trainer.testing.manifests import objects_of_kind
from trainer.testing.manifests import OVERLAYS
from trainer.testing.manifests import pod_templates_of
from trainer.testing.manifests import REPO
from trainer.testing.manifests import schema_validator
from trainer.testing.manifests import workload_of

RECOMMENDED_LABELS = ("name", "instance", "version", "component", "part-of", "managed-by")
RESTART_ME_EXIT_CODE = errors.RESTART_EXIT_CODE  # The trainer saved on SIGTERM: "restart me".
CUSTOM_KINDS = ("JobSet", "TFJob")  # Validated against their CRDs' vendored schemas.
MULTI_WORKER_OVERLAYS = ("multi-host", "jobset", "retrain")


# --- Rendering.


def test_every_overlay_renders(rendered):
  """Each overlay renders its workload, the service account and the shared objects."""
  for overlay, objects in rendered.items():
    kinds = {o["kind"] for o in objects}
    assert {"ServiceAccount", "ConfigMap", "NetworkPolicy"} <= kinds, overlay
    assert workload_of(objects), overlay
    assert not [o for o in objects if o["metadata"]["name"] == "imdb-trainer-defaults"], (
        f"{overlay}: the local-config defaults must not be rendered")


# --- Schemas.


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_objects_validate_against_kubernetes_schemas(rendered, overlay):
  """Every built-in object is valid (strictly: no unknown field) for a current release."""
  built_in = [o for o in rendered[overlay] if o["kind"] not in CUSTOM_KINDS]
  assert built_in
  for resource in built_in:
    kubernetes_validate.validate(resource, KUBERNETES_VERSION, strict=True)


def test_kubernetes_schema_validation_catches_mistakes(rendered):
  """The validation above fails on a misspelt field (so its passing means something)."""
  job = json.loads(json.dumps(workload_of(rendered["single-host"])))
  job["spec"]["podFailurePolicy"]["rules"][0]["onExitCode"] = {"operator": "In", "values": [1]}
  with pytest.raises(kubernetes_validate.ValidationError):
    kubernetes_validate.validate(job, KUBERNETES_VERSION, strict=True)


def _set_tfjob_container_name(tfjob):
  """Breaks a TFJob: the operator needs a container named "tensorflow"."""
  main_container_of(tfjob["spec"]["tfReplicaSpecs"]["Worker"]["template"])["name"] = "trainer"


def _set_tfjob_field(tfjob):
  """Breaks a TFJob: a misspelt runPolicy field."""
  tfjob["spec"]["runPolicy"]["backofLimit"] = 3


def _set_tfjob_pod_field(tfjob):
  """Breaks a TFJob: a pod field of the wrong type."""
  tfjob["spec"]["tfReplicaSpecs"]["Worker"]["template"]["spec"]["restartPolicy"] = 7


def _set_jobset_job_field(jobset):
  """Breaks a JobSet: a misspelt field of its Job template."""
  jobset["spec"]["replicatedJobs"][0]["template"]["spec"]["backofLimit"] = 0


def _set_jobset_reason(jobset):
  """Breaks a JobSet: a Job failure reason that does not exist."""
  jobset["spec"]["failurePolicy"]["rules"][0]["onJobFailureReasons"] = ["PodFailed"]


def _set_jobset_rule_name(jobset):
  """Breaks a JobSet: a rule name its webhook refuses."""
  jobset["spec"]["failurePolicy"]["rules"][0]["name"] = "bad name"


@pytest.mark.parametrize("overlay,schema,api_version,breakers", [
    ("tfjob", "tfjob-v1.schema.yaml", "kubeflow.org/v1",
     [_set_tfjob_container_name, _set_tfjob_field, _set_tfjob_pod_field]),
    ("jobset", "jobset-v1alpha2.schema.yaml", "jobset.x-k8s.io/v1alpha2",
     [_set_jobset_job_field, _set_jobset_reason, _set_jobset_rule_name]),
])
def test_custom_resources_validate_against_their_crd_schemas(
    rendered, overlay, schema, api_version, breakers):
  """The TFJob and the JobSet pass their vendored CRD schemas (pod and Job templates are
  Kubernetes' own); the schemas are not vacuous: each broken copy fails."""
  validator = schema_validator(REPO / "k8s" / "schemas" / schema)
  workload = workload_of(rendered[overlay])
  assert workload["apiVersion"] == api_version
  validator.validate(workload)
  for breaker in breakers:
    broken = json.loads(json.dumps(workload))
    breaker(broken)
    assert not validator.is_valid(broken), breaker.__doc__


def test_vertex_specs_validate():
  """The CustomJob specs match the Vertex AI v1 fields and the image that k8s deploys."""
  validator = schema_validator(REPO / "vertex" / "schemas" / "custom-job-spec.schema.yaml")
  specs = sorted((REPO / "vertex").glob("*.yaml"))
  assert [p.name for p in specs] == ["multi-worker.yaml", "preflight.yaml", "retrain.yaml",
                                     "single-worker.yaml"]
  image = load_yaml(REPO / "k8s" / "base" / "kustomization.yaml")["images"][0]
  for path in specs:
    spec = load_yaml(path)
    validator.validate(spec)
    for pool in spec["workerPoolSpecs"]:
      assert pool["containerSpec"]["imageUri"] == f"{image['newName']}:{image['newTag']}"
    for pool in spec["workerPoolSpecs"]:
      gpus = pool["machineSpec"]["acceleratorCount"]
      assert f"--require_gpus={gpus}" in pool["containerSpec"]["args"], path.name
  for name in ("multi-worker.yaml", "retrain.yaml"):
    multi = load_yaml(REPO / "vertex" / name)
    assert len(multi["workerPoolSpecs"]) == 2  # Pool 0: the chief; pool 1: the other workers.
    assert multi["scheduling"]["restartJobOnWorkerRestart"] is True
  misspelt = {**multi, "workerPoolSpec": multi["workerPoolSpecs"]}
  assert not validator.is_valid(misspelt)


def test_vertex_retraining_resumes_its_own_run():
  """Each retraining CustomJob names its run after itself: a restarted replica resumes it."""
  for pool in load_yaml(REPO / "vertex" / "retrain.yaml")["workerPoolSpecs"]:
    shell, flag, script, name = pool["containerSpec"]["command"]
    assert (shell, flag, name) == ("sh", "-c", "retrain")
    assert script.startswith('exec python -m trainer.retrain "$@" ')
    assert '--run_name="vertex-${CLOUD_ML_JOB_ID:?' in script
    assert not [a for a in pool["containerSpec"]["args"] if a.startswith("--run_name")]


# --- Security context, labels, resources: asserted on every pod template.


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_pods_are_locked_down(rendered, overlay):
  """Non-root, no privilege escalation, no capabilities, read-only root, seccomp, no token."""
  for template in pod_templates_of(workload_of(rendered[overlay])):
    pod = template["spec"]
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["runAsUser"] >= 10000
    assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    assert pod["automountServiceAccountToken"] is False
    assert not pod.get("hostNetwork") and not pod.get("hostPID") and not pod.get("hostIPC")
    for container in pod["containers"]:
      context = container["securityContext"]
      assert context["allowPrivilegeEscalation"] is False
      assert context.get("privileged", False) is False
      assert context["readOnlyRootFilesystem"] is True
      assert context["capabilities"] == {"drop": ["ALL"]}


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_pods_have_writable_scratch_space(rendered, overlay):
  """/tmp, HOME and the Keras cache are emptyDir volumes (the root file system is read-only)."""
  for template in pod_templates_of(workload_of(rendered[overlay])):
    volumes = {v["name"]: v for v in template["spec"]["volumes"]}
    container = main_container_of(template)
    mounts = {m["mountPath"]: volumes[m["name"]] for m in container["volumeMounts"]}
    environment = environment_of(rendered[overlay], container)
    for path in ("/tmp", environment["HOME"], environment["KERAS_HOME"]):
      mount = [m for m in mounts if path == m or path.startswith(m.rstrip("/") + "/")]
      assert mount and "emptyDir" in mounts[mount[0]], f"{overlay}: {path} is not writable"


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_every_object_has_the_recommended_labels(rendered, overlay):
  """app.kubernetes.io/* labels on every object and every pod template."""
  objects = rendered[overlay]
  labelled = [o["metadata"] for o in objects]
  labelled += [t["metadata"] for t in pod_templates_of(workload_of(objects))]
  for metadata in labelled:
    labels = metadata.get("labels", {})
    for label in RECOMMENDED_LABELS:
      assert labels.get(f"app.kubernetes.io/{label}"), f"{overlay}: no {label} on {metadata}"
  (template, *_) = pod_templates_of(workload_of(objects))
  assert template["metadata"]["labels"]["app.kubernetes.io/name"] == "imdb-bilstm"


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_pods_use_the_workload_identity_service_account(rendered, overlay):
  """Pods run as the overlay's service account, bound to a GCP one; no key is mounted."""
  (account,) = objects_of_kind(rendered[overlay], "ServiceAccount")
  assert account["metadata"]["annotations"]["iam.gke.io/gcp-service-account"].endswith(
      ".iam.gserviceaccount.com")
  for template in pod_templates_of(workload_of(rendered[overlay])):
    assert template["spec"]["serviceAccountName"] == account["metadata"]["name"]
    assert not [v for v in template["spec"]["volumes"] if "secret" in v]
    assert "GOOGLE_APPLICATION_CREDENTIALS" not in environment_of(rendered[overlay],
                                                                main_container_of(template))


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_resources_are_requested_and_limited(rendered, overlay):
  """CPU and memory requested and limited (equal: Guaranteed QoS); GPUs where it trains."""
  for template in pod_templates_of(workload_of(rendered[overlay])):
    resources = main_container_of(template)["resources"]
    assert resources["requests"] == resources["limits"]
    assert {"cpu", "memory"} <= set(resources["limits"])
    gpus = int(resources["limits"].get("nvidia.com/gpu", 0))
    assert (gpus >= 1) == (overlay != "prepare"), f"{overlay}: {gpus} GPUs"


# --- Commands, restarts, the multi-host wiring.


TRAIN_FLAGS = {"--data_dir", "--workdir", "--preset"}
RETRAIN_FLAGS = {"--input", "--data_cache", "--runs_dir", "--run_name", "--production", "--preset"}
CLUSTER_FLAGS = {"--cluster_wait_seconds", "--global_batch_size", "--learning_rate",
                 "--warmup_steps"}


@pytest.mark.parametrize("overlay,module,flags", [
    ("prepare", "trainer.prepare", {"--input", "--output_dir"}),
    ("single-host", "trainer.train", TRAIN_FLAGS),
    ("multi-host", "trainer.train", TRAIN_FLAGS | CLUSTER_FLAGS),
    ("jobset", "trainer.train", TRAIN_FLAGS | CLUSTER_FLAGS),
    ("tfjob", "trainer.train", TRAIN_FLAGS | CLUSTER_FLAGS),
    ("retrain", "trainer.retrain", RETRAIN_FLAGS | CLUSTER_FLAGS),
])
def test_commands_follow_the_contract(rendered, overlay, module, flags):
  """Each pod runs its command with its flags; every $(VAR) in them is defined."""
  for template in pod_templates_of(workload_of(rendered[overlay])):
    container = main_container_of(template)
    assert container["command"] == ["python", "-m", module]
    assert {arg.split("=", 1)[0] for arg in container["args"]} == flags
    environment = environment_of(rendered[overlay], container)
    for name in re.findall(r"\$\((\w+)\)", " ".join(container["args"])):
      assert environment.get(name), f"{overlay}: $({name}) is not set"


@pytest.mark.parametrize("overlay", JOB_OVERLAYS)
def test_exit_codes_decide_retries(rendered, overlay):
  """The trainer's exit codes: 2-5 fail the Job, 42 and disruptions are ignored, 43 counts."""
  (job,) = job_specs_of(workload_of(rendered[overlay]))
  rules = job["podFailurePolicy"]["rules"]
  fail = [code for r in rules if r["action"] == "FailJob" for code in r["onExitCodes"]["values"]]
  assert sorted(fail) == sorted([errors.USER_ERROR_EXIT_CODE, errors.REGRESSION_EXIT_CODE,
                                 errors.DATA_DRIFT_EXIT_CODE, errors.SERVING_GATE_EXIT_CODE])
  ignored_codes = [r["onExitCodes"] for r in rules
                   if r["action"] == "Ignore" and "onExitCodes" in r]
  assert ignored_codes == [{"operator": "In", "values": [RESTART_ME_EXIT_CODE]}]
  assert {"action": "Ignore", "onPodConditions": [{"type": "DisruptionTarget"}]} in rules
  codes = [c for r in rules if "onExitCodes" in r for c in r["onExitCodes"]["values"]]
  assert errors.RETRY_EXIT_CODE not in codes  # Counted: retried within backoffLimit.
  assert all(r["onExitCodes"]["operator"] == "In" for r in rules if "onExitCodes" in r)
  template = job["template"]["spec"]
  assert template["restartPolicy"] == "Never"  # podFailurePolicy requires it.
  assert template["terminationGracePeriodSeconds"] >= 120  # Time to save a checkpoint.
  # Exit 42 is ignored: only a deadline bounds a job that keeps being preempted.
  assert 3600 <= job["activeDeadlineSeconds"] <= 86400
  if overlay == "jobset":
    assert job["backoffLimit"] == 0  # A failed worker fails its Job: the JobSet restarts all.
  else:
    assert 1 <= job["backoffLimit"] <= 10


def test_jobset_restarts_the_whole_set_except_on_permanent_failures(rendered):
  """Permanent Job failures fail the JobSet; other failures restart every worker, bounded."""
  spec = workload_of(rendered["jobset"])["spec"]
  policy = spec["failurePolicy"]
  assert 1 <= policy["maxRestarts"] <= 10
  assert policy["rules"] == [{"name": "permanent", "action": "FailJobSet",
                              "onJobFailureReasons": ["PodFailurePolicy", "DeadlineExceeded"]}]
  assert spec["successPolicy"] == {"operator": "All"}
  assert spec["network"]["publishNotReadyAddresses"] is True
  (job,) = job_specs_of(workload_of(rendered["jobset"]))
  assert "ttlSecondsAfterFinished" not in job  # The JobSet's own TTL removes its Jobs.


def test_tfjob_restarts_on_exit_42(rendered):
  """The TFJob's workers restart on any failure: "ExitCode" would take 42 as permanent."""
  tfjob = workload_of(rendered["tfjob"])
  worker = tfjob["spec"]["tfReplicaSpecs"]["Worker"]
  assert worker["restartPolicy"] == "OnFailure"
  assert "restartPolicy" not in worker["template"]["spec"]  # The replica's policy applies.
  assert worker["template"]["spec"]["terminationGracePeriodSeconds"] >= 120
  run_policy = tfjob["spec"]["runPolicy"]
  assert run_policy["backoffLimit"] >= 1
  assert 3600 <= run_policy["activeDeadlineSeconds"] <= 86400
  assert run_policy["cleanPodPolicy"] == "Running"  # No worker restarts after worker 0 is done.


def _address_of_worker(overlay, objects, index):
  """The host:port at which the overlay's worker `index` is reached: its pod's DNS name."""
  workload = workload_of(objects)
  template = pod_templates_of(workload)[0]
  (port,) = [p["containerPort"] for p in main_container_of(template)["ports"]]
  name = workload["metadata"]["name"]
  if overlay == "jobset":
    network = workload["spec"]["network"]
    (replicated,) = workload["spec"]["replicatedJobs"]
    return f"{name}-{replicated['name']}-0-{index}.{network['subdomain']}:{port}", None
  (service,) = objects_of_kind(objects, "Service")
  job_name = "$(JOB_NAME)" if workload["kind"] == "CronJob" else name
  assert template["spec"]["subdomain"] == service["metadata"]["name"]
  return f"{job_name}-{index}.{service['metadata']['name']}:{port}", service


@pytest.mark.parametrize("overlay", MULTI_WORKER_OVERLAYS)
def test_multi_host_workers_find_each_other(rendered, overlay):
  """Indexed Job, headless Service (or the JobSet's network) and TRAINER_* variables agree."""
  objects = rendered[overlay]
  (spec,) = job_specs_of(workload_of(objects))
  assert spec["completionMode"] == "Indexed"
  assert spec["completions"] == spec["parallelism"] >= 2
  container = main_container_of(spec["template"])
  environment = environment_of(objects, container)
  assert environment["TRAINER_NUM_WORKERS"] == str(spec["completions"])
  template = environment["TRAINER_WORKER_ADDRESS_TEMPLATE"]
  address, service = _address_of_worker(overlay, objects, 1)
  assert template.replace("{index}", "1") == address
  (port,) = [p["containerPort"] for p in container["ports"]]
  if service:
    assert service["spec"]["clusterIP"] == "None"
    assert service["spec"]["publishNotReadyAddresses"] is True
    workload = workload_of(objects)
    pod_labels = dict(spec["template"]["metadata"]["labels"])
    if workload["kind"] == "Job":  # Kubernetes labels a Job's pods with its name.
      pod_labels["batch.kubernetes.io/job-name"] = workload["metadata"]["name"]
    assert service["spec"]["selector"].items() <= pod_labels.items()
    assert [p["targetPort"] for p in service["spec"]["ports"]] == [port]
  (policy,) = objects_of_kind(objects, "NetworkPolicy")
  assert [p["port"] for p in policy["spec"]["ingress"][0]["ports"]] == [port]
  pod_labels = spec["template"]["metadata"]["labels"]
  assert policy["spec"]["podSelector"]["matchLabels"].items() <= pod_labels.items()
  assert "--cluster_wait_seconds=1800" in container["args"]  # Time to provision a GPU node.
  # Scaling changes only the number of workers: the global batch still divides among replicas.
  (batch,) = [int(a.split("=")[1]) for a in container["args"] if a.startswith("--global_batch")]
  gpus = int(container["resources"]["limits"]["nvidia.com/gpu"])
  for workers in (spec["completions"], 3, 4):
    assert batch % (workers * gpus) == 0, f"{overlay}: {batch} among {workers} x {gpus} GPUs"


# --- GPUs, nodes, runs.


@pytest.mark.parametrize("overlay", GPU_OVERLAYS)
def test_gpu_pods_ask_for_their_gpus_and_node(rendered, overlay):
  """The trainer is told how many GPUs it holds (it stops if it sees fewer), and GKE which."""
  for template in pod_templates_of(workload_of(rendered[overlay])):
    container = main_container_of(template)
    gpus = container["resources"]["limits"]["nvidia.com/gpu"]
    assert environment_of(rendered[overlay], container)["TRAINER_REQUIRE_GPUS"] == gpus
    accelerator = template["spec"]["nodeSelector"]["cloud.google.com/gke-accelerator"]
    assert accelerator.startswith("nvidia-")


@pytest.mark.parametrize("overlay,label", [
    ("single-host", "batch.kubernetes.io/controller-uid"),
    ("multi-host", "batch.kubernetes.io/controller-uid"),
    ("jobset", "jobset.sigs.k8s.io/jobset-uid"),  # The same across the set's restarts.
    ("tfjob", "training.kubeflow.org/job-name"),  # TFJob pods have no uid label.
])
def test_each_training_job_writes_its_own_run(rendered, overlay, label):
  """--workdir is $(WORKDIR)/$(RUN_ID): a new Job starts a new run, its replaced pods resume."""
  (template,) = pod_templates_of(workload_of(rendered[overlay]))
  container = main_container_of(template)
  assert "--workdir=$(WORKDIR)/$(RUN_ID)" in container["args"]
  assert environment_of(rendered[overlay], container)["RUN_ID"] == {
      "fieldRef": {"fieldPath": f"metadata.labels['{label}']"}}


@pytest.mark.parametrize("overlay", ["prepare", "single-host", "multi-host"])
def test_data_volume_component_moves_paths_to_a_volume(overlay, composed):
  """components/data-volume on a Job overlay: the claim at /data, the paths under it."""
  objects = composed(overlay, "data-volume")
  for resource in objects:
    kubernetes_validate.validate(resource, KUBERNETES_VERSION, strict=True)
  (template,) = pod_templates_of(workload_of(objects))
  volumes = {v["name"]: v for v in template["spec"]["volumes"]}
  mounts = {m["mountPath"]: m["name"] for m in main_container_of(template)["volumeMounts"]}
  assert volumes[mounts["/data"]]["persistentVolumeClaim"] == {"claimName": "imdb-data"}
  environment = environment_of(objects, main_container_of(template))
  assert environment["DATA_DIR"].startswith("/data/")
  assert environment["WORKDIR"].startswith("/data/")


def test_retraining_never_overlaps_and_resumes_its_run(rendered):
  """The CronJob forbids a second run at once; a restarted pod resumes its Job's run."""
  cronjob = workload_of(rendered["retrain"])
  assert cronjob["kind"] == "CronJob"
  assert cronjob["spec"]["concurrencyPolicy"] == "Forbid"
  (template,) = pod_templates_of(cronjob)
  container = main_container_of(template)
  assert "--run_name=$(JOB_NAME)" in container["args"]
  assert environment_of(rendered["retrain"], container)["JOB_NAME"] == {
      "fieldRef": {"fieldPath": "metadata.labels['batch.kubernetes.io/job-name']"}}
