"""Helpers of the deployment tests: rendering the k8s/ overlays and reading what they render."""

import json
import pathlib
import shutil
import subprocess

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
WORKLOAD_KINDS = ("Job", "CronJob", "TFJob")


def run_tool(command, **kwargs):
  """Runs a command with a time limit and returns the CompletedProcess (output as text)."""
  return subprocess.run(command, capture_output=True, text=True, timeout=TOOL_TIMEOUT_SECONDS,
                        check=False, **kwargs)


def load_yaml(path):
  """The one YAML document of a file."""
  return yaml.safe_load(pathlib.Path(path).read_text())


def schema_validator(path):
  """A JSON Schema validator for a vendored schema, resolving kubernetes-validate's $refs."""
  schema_dir = (pathlib.Path(kubernetes_validate.__file__).parent / "kubernetes-json-schema"
                / f"v{KUBERNETES_VERSION}.0-local-strict")
  definitions = json.loads((schema_dir / "_definitions.json").read_text())
  registry = referencing.Registry().with_resource(
      definitions["$id"], referencing.jsonschema.DRAFT202012.create_resource(definitions))
  return jsonschema.Draft202012Validator(load_yaml(path), registry=registry)


def kustomize(directory):
  """The objects that `kubectl kustomize` renders from a directory (skips without kubectl)."""
  kubectl = shutil.which("kubectl")
  if not kubectl:
    pytest.skip("kubectl is not installed: the overlays cannot be rendered here.")
  result = run_tool([kubectl, "kustomize", str(directory)])
  assert result.returncode == 0, f"{directory} does not render:\n{result.stderr}"
  return [o for o in yaml.safe_load_all(result.stdout) if o]


@pytest.fixture(scope="module")
def rendered():
  """{overlay: [objects]} of every overlay."""
  return {overlay: kustomize(REPO / "k8s" / "overlays" / overlay) for overlay in OVERLAYS}


def objects_of_kind(rendered_overlay, kind):
  """The rendered objects of one kind."""
  return [o for o in rendered_overlay if o["kind"] == kind]


def workload_of(rendered_overlay):
  """The overlay's one Job, CronJob or TFJob."""
  (workload,) = [o for o in rendered_overlay if o["kind"] in WORKLOAD_KINDS]
  return workload


def job_specs_of(workload):
  """The Job specs in a workload: a Job's own, a CronJob's template; none in a TFJob."""
  if workload["kind"] == "Job":
    return [workload["spec"]]
  if workload["kind"] == "CronJob":
    return [workload["spec"]["jobTemplate"]["spec"]]
  return []


def pod_templates_of(workload):
  """The pod templates in a Job, CronJob or TFJob."""
  if workload["kind"] == "TFJob":
    return [replica["template"] for replica in workload["spec"]["tfReplicaSpecs"].values()]
  return [spec["template"] for spec in job_specs_of(workload)]


def main_container_of(template):
  """The pod's one container."""
  (container,) = template["spec"]["containers"]
  return container


def environment_of(rendered_overlay, container):
  """The container's environment: the ConfigMaps it loads, then its env values (or sources)."""
  config_maps = {o["metadata"]["name"]: o["data"] for o in objects_of_kind(rendered_overlay, "ConfigMap")}
  environment = {}
  for source in container.get("envFrom", []):
    environment.update(config_maps[source["configMapRef"]["name"]])
  for variable in container.get("env", []):  # env wins over envFrom, as in Kubernetes.
    environment[variable["name"]] = variable.get("value", variable.get("valueFrom"))
  return environment
