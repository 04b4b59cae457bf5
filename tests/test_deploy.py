"""Deployment manifests: the k8s/ overlays and the vertex/ job specs.

Each overlay is rendered with `kubectl kustomize` (those tests skip where kubectl is missing);
every rendered object is validated against the Kubernetes schemas of a current release
(kubernetes-validate) and the TFJob against the vendored schema of its CRD. checkov's Kubernetes
checks are in test_deploy_linters.py.
"""

import json
import os
import re

import kubernetes_validate
import pytest
import yaml

from tests.deploy_testing import environment_of
from tests.deploy_testing import job_specs_of
from tests.deploy_testing import kustomize
from tests.deploy_testing import load_yaml
from tests.deploy_testing import main_container_of
from tests.deploy_testing import objects_of_kind
from tests.deploy_testing import pod_templates_of
from tests.deploy_testing import schema_validator
from tests.deploy_testing import workload_of
from tests.deploy_testing import KUBERNETES_VERSION
from tests.deploy_testing import OVERLAYS
from tests.deploy_testing import rendered  # pylint: disable=unused-import  (a fixture)
from tests.deploy_testing import REPO

RECOMMENDED_LABELS = ("name", "instance", "version", "component", "part-of", "managed-by")
RESTART_ME_EXIT_CODE = 42  # The trainer saved a checkpoint on SIGTERM: "restart me".


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
  built_in = [o for o in rendered[overlay] if o["kind"] != "TFJob"]
  assert built_in
  for resource in built_in:
    kubernetes_validate.validate(resource, KUBERNETES_VERSION, strict=True)


def test_kubernetes_schema_validation_catches_mistakes(rendered):
  """The validation above fails on a misspelt field (so its passing means something)."""
  job = json.loads(json.dumps(workload_of(rendered["single-host"])))
  job["spec"]["podFailurePolicy"]["rules"][0]["onExitCode"] = {"operator": "In", "values": [1]}
  with pytest.raises(kubernetes_validate.ValidationError):
    kubernetes_validate.validate(job, KUBERNETES_VERSION, strict=True)


def test_tfjob_validates_against_its_crd_schema(rendered):
  """The TFJob passes the vendored CRD schema, whose pod template is Kubernetes' own."""
  validator = schema_validator(REPO / "k8s" / "schemas" / "tfjob-v1.schema.yaml")
  tfjob = workload_of(rendered["tfjob"])
  assert tfjob["apiVersion"] == "kubeflow.org/v1"
  validator.validate(tfjob)
  # The schema is not vacuous: a wrong container name, field or pod field each fail.
  broken = json.loads(json.dumps(tfjob))
  main_container_of(broken["spec"]["tfReplicaSpecs"]["Worker"]["template"])["name"] = "trainer"
  assert not validator.is_valid(broken)
  broken = json.loads(json.dumps(tfjob))
  broken["spec"]["runPolicy"]["backofLimit"] = 3
  assert not validator.is_valid(broken)
  broken = json.loads(json.dumps(tfjob))
  broken["spec"]["tfReplicaSpecs"]["Worker"]["template"]["spec"]["restartPolicy"] = 7
  assert not validator.is_valid(broken)


def test_vertex_specs_validate():
  """The CustomJob specs match the Vertex AI v1 fields and the image that k8s deploys."""
  validator = schema_validator(REPO / "vertex" / "schemas" / "custom-job-spec.schema.yaml")
  specs = sorted((REPO / "vertex").glob("*.yaml"))
  assert [p.name for p in specs] == ["multi-worker.yaml", "retrain.yaml", "single-worker.yaml"]
  image = load_yaml(REPO / "k8s" / "base" / "kustomization.yaml")["images"][0]
  for path in specs:
    spec = load_yaml(path)
    validator.validate(spec)
    for pool in spec["workerPoolSpecs"]:
      assert pool["containerSpec"]["imageUri"] == f"{image['newName']}:{image['newTag']}"
  multi = load_yaml(REPO / "vertex" / "multi-worker.yaml")
  assert len(multi["workerPoolSpecs"]) == 2  # Pool 0: the chief; pool 1: the other workers.
  assert multi["scheduling"]["restartJobOnWorkerRestart"] is True
  misspelt = {**multi, "workerPoolSpec": multi["workerPoolSpecs"]}
  assert not validator.is_valid(misspelt)


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


@pytest.mark.parametrize("overlay,module,flags", [
    ("prepare", "trainer.prepare", {"--input", "--output_dir"}),
    ("single-host", "trainer.train", {"--data_dir", "--workdir", "--preset"}),
    ("multi-host", "trainer.train", {"--data_dir", "--workdir", "--preset"}),
    ("tfjob", "trainer.train", {"--data_dir", "--workdir", "--preset"}),
    ("retrain", "trainer.retrain",
     {"--input", "--data_cache", "--runs_dir", "--run_name", "--production", "--preset"}),
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


@pytest.mark.parametrize("overlay", ["prepare", "single-host", "multi-host", "retrain"])
def test_preempted_jobs_restart_without_counting(rendered, overlay):
  """Exit 42 and disruptions are ignored, other failures count against a small backoffLimit."""
  (job,) = job_specs_of(workload_of(rendered[overlay]))
  rules = job["podFailurePolicy"]["rules"]
  ignored_codes = [r["onExitCodes"] for r in rules
                   if r["action"] == "Ignore" and "onExitCodes" in r]
  assert {"operator": "In", "values": [RESTART_ME_EXIT_CODE]} in ignored_codes
  assert {"action": "Ignore", "onPodConditions": [{"type": "DisruptionTarget"}]} in rules
  assert 1 <= job["backoffLimit"] <= 10
  template = job["template"]["spec"]
  assert template["restartPolicy"] == "Never"  # podFailurePolicy requires it.
  assert template["terminationGracePeriodSeconds"] >= 120  # Time to save a checkpoint.


def test_tfjob_restarts_on_exit_42(rendered):
  """The TFJob's workers restart on any failure: "ExitCode" would take 42 as permanent."""
  tfjob = workload_of(rendered["tfjob"])
  worker = tfjob["spec"]["tfReplicaSpecs"]["Worker"]
  assert worker["restartPolicy"] == "OnFailure"
  assert "restartPolicy" not in worker["template"]["spec"]  # The replica's policy applies.
  assert worker["template"]["spec"]["terminationGracePeriodSeconds"] >= 120
  assert tfjob["spec"]["runPolicy"]["backoffLimit"] >= 1


def test_multi_host_workers_find_each_other(rendered):
  """Indexed Job, headless Service and the TRAINER_* variables agree with each other."""
  objects = rendered["multi-host"]
  job = workload_of(objects)
  (service,) = objects_of_kind(objects, "Service")
  spec = job["spec"]
  assert spec["completionMode"] == "Indexed"
  assert spec["completions"] == spec["parallelism"] >= 2
  pod = spec["template"]["spec"]
  container = main_container_of(spec["template"])
  environment = environment_of(objects, container)
  assert environment["TRAINER_NUM_WORKERS"] == str(spec["completions"])
  (port,) = [p["containerPort"] for p in container["ports"]]
  assert environment["TRAINER_WORKER_ADDRESS_TEMPLATE"] == (
      f"{job['metadata']['name']}-{{index}}.{service['metadata']['name']}:{port}")
  assert pod["subdomain"] == service["metadata"]["name"]
  assert service["spec"]["clusterIP"] == "None"
  assert service["spec"]["publishNotReadyAddresses"] is True
  assert service["spec"]["selector"] == {"batch.kubernetes.io/job-name": job["metadata"]["name"]}
  assert [p["targetPort"] for p in service["spec"]["ports"]] == [port]
  (policy,) = objects_of_kind(objects, "NetworkPolicy")
  assert [p["port"] for p in policy["spec"]["ingress"][0]["ports"]] == [port]
  pod_labels = spec["template"]["metadata"]["labels"]
  assert policy["spec"]["podSelector"]["matchLabels"].items() <= pod_labels.items()


@pytest.mark.parametrize("overlay", ["prepare", "single-host", "multi-host"])
def test_data_volume_component_moves_paths_to_a_volume(tmp_path, overlay):
  """components/data-volume on a Job overlay: the claim at /data, the paths under it."""
  relative = os.path.relpath(REPO / "k8s", tmp_path)
  (tmp_path / "kustomization.yaml").write_text(yaml.safe_dump({
      "apiVersion": "kustomize.config.k8s.io/v1beta1", "kind": "Kustomization",
      "resources": [f"{relative}/overlays/{overlay}"],
      "components": [f"{relative}/components/data-volume"]}))
  objects = kustomize(tmp_path)
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
