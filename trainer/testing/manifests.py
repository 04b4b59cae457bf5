"""The k8s/ overlays rendered and read: for the deployment tests and docker/check_image.py.

Needs kubectl (for `kustomize`) and the `test` extra (PyYAML, jsonschema, kubernetes-validate).
"""

import json
import os
import pathlib
import re
import shutil
import subprocess

import jsonschema
import kubernetes_validate
import referencing
import referencing.jsonschema
import yaml

REPO = pathlib.Path(__file__).resolve().parent.parent.parent
OVERLAYS = ("prepare", "single-host", "multi-host", "jobset", "tfjob", "retrain")
JOB_OVERLAYS = ("prepare", "single-host", "multi-host", "jobset", "retrain")  # Kubernetes Jobs.
GPU_OVERLAYS = ("single-host", "multi-host", "jobset", "tfjob", "retrain")
KUBERNETES_VERSION = "1.37"  # The newest release whose schemas kubernetes-validate ships.
TOOL_TIMEOUT_SECONDS = 120
WORKLOAD_KINDS = ("Job", "CronJob", "JobSet", "TFJob")


class KubectlMissing(RuntimeError):
  """kubectl is not installed, so the overlays cannot be rendered."""


def run_tool(command, **kwargs):
  """Runs a command with a time limit and returns the CompletedProcess (output as text)."""
  return subprocess.run(command, capture_output=True, text=True, timeout=TOOL_TIMEOUT_SECONDS,
                        check=False, **kwargs)


def load_yaml(path):
  """The one YAML document of a file."""
  return yaml.safe_load(pathlib.Path(path).read_text())


def load_yaml_documents(path):
  """Every YAML document of a file."""
  return [document for document in yaml.safe_load_all(pathlib.Path(path).read_text()) if document]


def schema_validator(path):
  """A JSON Schema validator for a vendored schema, resolving kubernetes-validate's $refs."""
  schema_dir = (pathlib.Path(kubernetes_validate.__file__).parent / "kubernetes-json-schema"
                / f"v{KUBERNETES_VERSION}.0-local-strict")
  definitions = json.loads((schema_dir / "_definitions.json").read_text())
  registry = referencing.Registry().with_resource(
      definitions["$id"], referencing.jsonschema.DRAFT202012.create_resource(definitions))
  return jsonschema.Draft202012Validator(load_yaml(path), registry=registry)


def kustomize(directory):
  """The objects that `kubectl kustomize` renders from a directory.

  Raises:
    KubectlMissing: when kubectl is not installed.
    RuntimeError: when the directory does not render.
  """
  kubectl = shutil.which("kubectl")
  if not kubectl:
    raise KubectlMissing("kubectl is not installed: the overlays cannot be rendered here.")
  result = run_tool([kubectl, "kustomize", str(directory)])
  if result.returncode:
    raise RuntimeError(f"{directory} does not render:\n{result.stderr}")
  return [o for o in yaml.safe_load_all(result.stdout) if o]


def kustomize_composed(directory, overlay, components):
  """The objects of an overlay with components added, as a kustomization of your own renders them.

  Args:
    directory: an empty folder, where that kustomization.yaml is written.
    overlay: the name of a k8s/overlays/ folder.
    components: names of k8s/components/ folders.
  """
  relative = os.path.relpath(REPO / "k8s", directory)
  (pathlib.Path(directory) / "kustomization.yaml").write_text(yaml.safe_dump({
      "apiVersion": "kustomize.config.k8s.io/v1beta1", "kind": "Kustomization",
      "resources": [f"{relative}/overlays/{overlay}"],
      "components": [f"{relative}/components/{component}" for component in components]}))
  return kustomize(directory)


def render_overlays():
  """{overlay: [objects]} of every overlay of k8s/overlays."""
  return {overlay: kustomize(REPO / "k8s" / "overlays" / overlay) for overlay in OVERLAYS}


def objects_of_kind(rendered_overlay, kind):
  """The rendered objects of one kind."""
  return [o for o in rendered_overlay if o["kind"] == kind]


def workload_of(rendered_overlay):
  """The overlay's one Job, CronJob, JobSet or TFJob."""
  (workload,) = [o for o in rendered_overlay if o["kind"] in WORKLOAD_KINDS]
  return workload


def job_specs_of(workload):
  """The Job specs of a workload: a Job's own, a CronJob's or JobSet's templates (a TFJob: none)."""
  if workload["kind"] == "Job":
    return [workload["spec"]]
  if workload["kind"] == "CronJob":
    return [workload["spec"]["jobTemplate"]["spec"]]
  if workload["kind"] == "JobSet":
    return [replicated["template"]["spec"] for replicated in workload["spec"]["replicatedJobs"]]
  return []


def pod_templates_of(workload):
  """The pod templates in a Job, CronJob, JobSet or TFJob."""
  if workload["kind"] == "TFJob":
    return [replica["template"] for replica in workload["spec"]["tfReplicaSpecs"].values()]
  return [spec["template"] for spec in job_specs_of(workload)]


def main_container_of(template):
  """The pod's one container."""
  (container,) = template["spec"]["containers"]
  return container


def environment_of(rendered_overlay, container):
  """The container's environment: the ConfigMaps it loads, then its env values (or sources)."""
  config_maps = {o["metadata"]["name"]: o["data"]
                 for o in objects_of_kind(rendered_overlay, "ConfigMap")}
  environment = {}
  for source in container.get("envFrom", []):
    environment.update(config_maps[source["configMapRef"]["name"]])
  for variable in container.get("env", []):  # env wins over envFrom, as in Kubernetes.
    environment[variable["name"]] = variable.get("value", variable.get("valueFrom"))
  return environment


# --- Running a rendered pod as a container (docker/test_image.sh; tested without docker).

_QUANTITY_UNITS = {"Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40, "k": 10**3, "M": 10**6,
                   "G": 10**9}


def quantity_bytes(quantity):
  """Bytes of a Kubernetes quantity such as "10Gi", "64Mi" or "1000"."""
  match = re.fullmatch(r"(\d+)([A-Za-z]*)", str(quantity))
  if not match or match.group(2) not in ("", *_QUANTITY_UNITS):
    raise ValueError(f"{quantity!r} is not a quantity this helper reads (e.g. 10Gi).")
  return int(match.group(1)) * _QUANTITY_UNITS.get(match.group(2), 1)


def expand_variables(text, environment):
  """Kubernetes' $(NAME) expansion of a command or argument: $$ escapes, unknown names stay."""
  return re.sub(r"\$\$|\$\((\w+)\)",
                lambda m: "$" if m.group(0) == "$$" else environment.get(m.group(1), m.group(0)),
                text)


def cpu_cores(quantity):
  """Whole cores of a CPU quantity such as "16" or "500m", rounded up as the downward API does."""
  match = re.fullmatch(r"(\d+)(m?)", str(quantity))
  if not match:
    raise ValueError(f"{quantity!r} is not a CPU quantity this helper reads (e.g. 16, 500m).")
  return -(-int(match.group(1)) // (1000 if match.group(2) else 1))


def _value_from(source, container, field_values, name):
  """The value of an env variable's `valueFrom`: a pod field, or the container's CPU limit."""
  if "resourceFieldRef" in source:
    if source["resourceFieldRef"]["resource"] != "limits.cpu":
      raise ValueError(f"{name}: only limits.cpu is read from a resourceFieldRef here.")
    return cpu_cores(container["resources"]["limits"]["cpu"])
  path = source["fieldRef"]["fieldPath"]
  if path not in field_values:
    raise ValueError(f"{name} comes from {path}, which this run does not provide.")
  return field_values[path]


def pod_environment(rendered_overlay, container, field_values):
  """The container's environment as its kubelet sets it: `valueFrom.fieldRef` read from
  `field_values`, `resourceFieldRef` from the container's limits, $(NAME) in a value replaced by
  the variable defined before it.

  Args:
    rendered_overlay: the overlay's objects (its ConfigMaps).
    container: the container of a rendered pod template.
    field_values: {fieldPath: value} of the pod, e.g. its job-name label.
  """
  environment = {}
  for name, value in environment_of(rendered_overlay, container).items():
    if isinstance(value, dict):
      value = _value_from(value, container, field_values, name)
    environment[name] = expand_variables(str(value), environment)
  return environment


def _scratch_options(template, container):
  """docker run options for the pod's emptyDir mounts: tmpfs, /dev/shm's size."""
  volumes = {v["name"]: v for v in template["spec"].get("volumes", [])}
  options = []
  for mount in container.get("volumeMounts", []):
    empty_dir = volumes[mount["name"]].get("emptyDir")
    if empty_dir is None:
      raise ValueError(f"volume {mount['name']} is not an emptyDir: mount it yourself.")
    size = quantity_bytes(empty_dir.get("sizeLimit", "1Gi"))
    if mount["mountPath"] == "/dev/shm":
      options.append(f"--shm-size={size}")
    else:
      options.append(f"--tmpfs={mount['mountPath']}:rw,exec,nosuid,size={size}")
  return options


def _security_options(template, container):
  """docker run options for the pod's and container's securityContext (what docker can do)."""
  context = {**template["spec"].get("securityContext", {}), **container["securityContext"]}
  options = [f"--user={context['runAsUser']}:{context['runAsGroup']}"]
  if context.get("readOnlyRootFilesystem"):
    options.append("--read-only")
  options += [f"--cap-drop={c}" for c in context.get("capabilities", {}).get("drop", [])]
  if context.get("allowPrivilegeEscalation") is False:
    options.append("--security-opt=no-new-privileges")
  if context.get("privileged"):
    raise ValueError("a privileged container is never run here")
  return options


def docker_run_command(template, environment, image, name, network, binds=(), command=None,
                       hosts=()):
  """`docker run` of the pod template's one container, as its kubelet would start it.

  Args:
    template: a rendered pod template.
    environment: the container's environment (see `pod_environment`), already changed where
      the run differs from a cluster (storage paths, worker addresses).
    image: the image to run instead of the template's.
    name: the container's name.
    network: "host" or "none": test containers never get another network.
    binds: "host_path:container_path[:ro]" volumes (the storage that a cluster has in GCS).
    command: the command and arguments to run instead of the container's.
    hosts: "name:address" entries of the container's /etc/hosts (a cluster's DNS names).

  Returns:
    The command as a list; it creates the container detached (-d).
  """
  if network not in ("host", "none"):
    raise ValueError(f"network={network!r}: test containers use only host or none.")
  container = main_container_of(template)
  command = [expand_variables(part, environment)
             for part in command or container["command"] + container.get("args", [])]
  return (["docker", "run", "-d", f"--name={name}", f"--network={network}",
           *_security_options(template, container), *_scratch_options(template, container),
           *[f"--volume={bind}" for bind in binds], *[f"--add-host={host}" for host in hosts],
           *[f"--env={key}={value}" for key, value in sorted(environment.items())],
           f"--entrypoint={command[0]}", image, *command[1:]])
