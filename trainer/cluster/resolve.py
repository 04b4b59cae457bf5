"""Which cluster this process belongs to: the only module reading cluster settings.

A cluster of workers describes itself in one of these ways (several at once are fine when they
agree, as Vertex AI's TF_CONFIG and CLUSTER_SPEC do):

- TF_CONFIG, `{"cluster": {"chief": [...], "worker": [...]}, "task": {"type": ..., "index": ...}}`
  (Kubeflow TFJob, Vertex AI, by hand): the chief is the "chief" task, else worker 0.
- CLUSTER_SPEC (Vertex AI): worker pool "workerpool0" is the chief, "workerpool1" the workers.
- A Kubernetes Indexed Job: JOB_COMPLETION_INDEX (set by Kubernetes), TRAINER_NUM_WORKERS and
  TRAINER_WORKER_ADDRESS_TEMPLATE, a host:port with "{index}" such as
  `imdb-train-multi-host-{index}.imdb-train-multi-host:2222` (pod hostname and headless
  Service); worker 0 is the chief.
- Flags: --cluster_workers=host:port,... or --worker_address_template with --num_workers, and
  --worker_index; a flag overrides the environment variable of the same meaning.

Only chief and worker tasks train; parameter servers and evaluators of a cluster are ignored.
"""

import dataclasses
import json
import os

from trainer.config import option
from trainer.config import Options
from trainer.errors import UserInputError

TRAINING_ROLES = ("chief", "worker")  # In this order: the chief first.
VERTEX_POOL_ROLES = {"workerpool0": "chief", "workerpool1": "worker"}
INDEX_VARIABLE = "JOB_COMPLETION_INDEX"
NUM_WORKERS_VARIABLE = "TRAINER_NUM_WORKERS"
ADDRESS_TEMPLATE_VARIABLE = "TRAINER_WORKER_ADDRESS_TEMPLATE"
DEFAULT_WAIT_SECONDS = 600.0


@dataclasses.dataclass(frozen=True)
class ClusterOptions(Options):
  """The cluster as given by flags (each overriding its environment variable), the wait, GPUs."""
  cluster_workers: tuple[str, ...] = option(
      (), "host:port of every worker, worker 0 (the chief) first, with --worker_index: a "
      "cluster without TF_CONFIG.")
  worker_address_template: str | None = option(
      None, "host:port of worker {index}, e.g. "
      "imdb-train-multi-host-{index}.imdb-train-multi-host:2222, with --num_workers (default: "
      f"${ADDRESS_TEMPLATE_VARIABLE}).")
  num_workers: int | None = option(
      None, f"How many workers --worker_address_template makes (default: "
      f"${NUM_WORKERS_VARIABLE}).", bound="positive")
  worker_index: int | None = option(
      None, f"Which worker this process is; 0 is the chief (default: ${INDEX_VARIABLE}).",
      bound="nonnegative")
  cluster_wait_seconds: float = option(
      DEFAULT_WAIT_SECONDS, "How long every worker waits for the others to answer before it "
      "stops, naming them.", bound="nonnegative")
  require_gpus: int | None = option(
      None, "GPUs this process must see, else it stops naming the CUDA libraries at fault "
      "(default: $TRAINER_REQUIRE_GPUS, else as many as NVIDIA_VISIBLE_DEVICES lists, else 0).",
      bound="nonnegative")


@dataclasses.dataclass(frozen=True)
class Cluster:
  """The training tasks of a cluster as TensorFlow names them, and which one this process is."""
  spec: dict  # {"chief": ["host:port"], "worker": ["host:port", ...]}; "chief" is optional.
  task_type: str  # "chief" or "worker".
  task_index: int
  source: str  # Where the description came from, for messages, e.g. "TF_CONFIG".

  @property
  def tasks(self):
    """(name, address) of every training task, the chief first, e.g. ("worker 1", "host:2222")."""
    return [(f"{role} {index}", address) for role in TRAINING_ROLES
            for index, address in enumerate(self.spec.get(role, []))]

  @property
  def num_workers(self):
    """Number of processes that train (the chief included)."""
    return len(self.tasks)

  @property
  def address(self):
    """host:port of this process."""
    return self.spec[self.task_type][self.task_index]

  @property
  def is_chief(self):
    """Whether this process is the chief: the "chief" task, else worker 0."""
    if "chief" in self.spec:
      return self.task_type == "chief"
    return self.task_type == "worker" and self.task_index == 0

  def tf_config(self):
    """The TF_CONFIG value that describes this cluster and task to TensorFlow."""
    return {"cluster": self.spec, "task": {"type": self.task_type, "index": self.task_index}}

  def describe(self):
    """This task and the cluster in a few words, for logs and messages."""
    return f"{self.task_type} {self.task_index} of {self.spec}"


def _json_variable(environ, name):
  """The parsed JSON environment variable `name` ({"cluster": ..., "task": ...}), or None."""
  raw = environ.get(name)
  if not raw:
    return None
  try:
    value = json.loads(raw)
  except json.JSONDecodeError as e:
    raise UserInputError(f"{name} is not valid JSON ({e}): {raw[:200]}") from e
  if not isinstance(value, dict) or "cluster" not in value or "task" not in value:
    keys = sorted(value) if isinstance(value, dict) else type(value).__name__
    raise UserInputError(f'{name} needs "cluster" and "task" keys, got {keys}.')
  return value


def cluster_config(environ=os.environ):
  """The parsed TF_CONFIG ({"cluster": ..., "task": ...}), or None when it is not set."""
  return _json_variable(environ, "TF_CONFIG")


def split_address(address, where):
  """(host, port) of "host:port" ("[v6 address]:port" too); `where` names it in errors."""
  host, _, port = str(address).rpartition(":")
  host = host.strip("[]")
  if not host or not port.isdigit() or not 0 < int(port) < 65536:
    raise UserInputError(f"{where}: {address!r} is not host:port (e.g. "
                         "imdb-train-multi-host-0.imdb-train-multi-host:2222).")
  return host, int(port)


def _whole_number(value, name):
  """`value` (an int, or the text of an environment variable) as an int; `name` names it."""
  try:
    return int(str(value).strip())
  except ValueError:
    raise UserInputError(f"{name}={value!r} is not a whole number.") from None


def _checked(cluster):
  """`cluster` after checking its addresses and task index; raises UserInputError otherwise."""
  task_count = len(cluster.spec.get(cluster.task_type, []))
  if not 0 <= cluster.task_index < task_count:
    raise UserInputError(
        f"{cluster.source} makes this process {cluster.task_type} {cluster.task_index}, but the "
        f"cluster has {task_count} {cluster.task_type} task(s), numbered from 0: give each "
        f"process its own index below {task_count}.")
  owners = {}
  for task, address in cluster.tasks:
    split_address(address, f"{cluster.source}, {task}")
    if address in owners:
      raise UserInputError(
          f"{cluster.source} gives {address} to both {owners[address]} and {task}: every task "
          "needs its own host:port (two on one machine need different ports).")
    owners[address] = task
  return cluster


def _from_cluster_and_task(description, source, roles):
  """The Cluster of a TF_CONFIG or CLUSTER_SPEC value, or None without training tasks.

  Args:
    description: the parsed value, {"cluster": {job: [addresses]}, "task": {"type", "index"}}.
    source: the variable's name, for messages.
    roles: its job names that train, mapped to TensorFlow's ("chief" or "worker").
  """
  cluster, task = description["cluster"], description["task"]
  if not isinstance(cluster, dict) or not isinstance(task, dict):
    raise UserInputError(f'{source}: "cluster" and "task" must be JSON objects.')
  spec = {}
  for job, role in roles.items():
    addresses = cluster.get(job) or []
    if not isinstance(addresses, list):
      raise UserInputError(f"{source}: the {job!r} tasks must be a list of host:port.")
    if addresses:
      spec[role] = addresses
  if not spec:
    return None
  job = task.get("type")
  if job not in roles:
    raise UserInputError(
        f"{source} makes this process a {job!r} task, but this job only trains, with "
        f"{sorted(roles)} tasks (MultiWorkerMirroredStrategy uses no parameter servers or "
        "evaluators): run this trainer only in those.")
  index = _whole_number(task.get("index", 0), f"{source} task index")
  return _checked(Cluster(spec, roles[job], index, source))


def _from_tf_config(environ):
  """The Cluster of TF_CONFIG, or None."""
  config = cluster_config(environ)
  if config is None:
    return None
  return _from_cluster_and_task(config, "TF_CONFIG", {role: role for role in TRAINING_ROLES})


def _from_cluster_spec(environ):
  """The Cluster of Vertex AI's CLUSTER_SPEC, or None."""
  spec = _json_variable(environ, "CLUSTER_SPEC")
  if spec is None:
    return None
  return _from_cluster_and_task(spec, "CLUSTER_SPEC", VERTEX_POOL_ROLES)


def _setting(flag_value, flag_name, environ, variable):
  """(value, name) of a flag, else of its environment variable, else (None, None)."""
  if flag_value not in (None, "", ()):
    return flag_value, flag_name
  if environ.get(variable, "").strip():
    return environ[variable].strip(), variable
  return None, None


def _from_worker_list(options, environ):
  """The Cluster of an Indexed Job's environment or of the flags, or None when neither is set.

  All workers are "worker" tasks; worker 0 is the chief.
  """
  count, count_name = _setting(options.num_workers, "--num_workers", environ,
                               NUM_WORKERS_VARIABLE)
  template, template_name = _setting(options.worker_address_template, "--worker_address_template",
                                     environ, ADDRESS_TEMPLATE_VARIABLE)
  index, index_name = _setting(options.worker_index, "--worker_index", environ, INDEX_VARIABLE)
  if not (options.cluster_workers or template or count is not None
          or options.worker_index is not None):
    return None  # JOB_COMPLETION_INDEX alone: an Indexed Job that is not a training cluster.
  if count is not None:
    count = _whole_number(count, count_name)
    if count < 1:
      raise UserInputError(f"{count_name}={count}: a cluster needs at least 1 worker.")
  if options.cluster_workers and template:
    raise UserInputError(f"Give the workers' addresses once: --cluster_workers or "
                         f"{template_name}, not both.")
  if options.cluster_workers:
    addresses = list(options.cluster_workers)
    if count is not None and count != len(addresses):
      raise UserInputError(f"{count_name}={count}, but --cluster_workers lists "
                           f"{len(addresses)} workers; leave out one of them.")
    names = ["--cluster_workers"]
  elif template:
    if count is None:
      raise UserInputError(f"{template_name} needs the number of workers: set "
                           f"{NUM_WORKERS_VARIABLE} or --num_workers.")
    if "{index}" not in template:
      raise UserInputError(f"{template_name}={template!r} has no {{index}}, so every worker "
                           "would get the same address; e.g. "
                           "imdb-train-multi-host-{index}.imdb-train-multi-host:2222.")
    addresses = [template.replace("{index}", str(i)) for i in range(count)]
    names = [template_name, count_name]
  else:
    raise UserInputError(
        f"{count_name or '--worker_index'} needs the workers' addresses: set "
        f"{ADDRESS_TEMPLATE_VARIABLE} or --worker_address_template (a host:port with {{index}}, "
        "e.g. imdb-train-multi-host-{index}.imdb-train-multi-host:2222), or list them with "
        "--cluster_workers=host:port,...")
  if index is None:
    raise UserInputError(f"This process does not know which worker it is: run it in a "
                         f"Kubernetes Job with completionMode: Indexed (it sets {INDEX_VARIABLE}) "
                         "or pass --worker_index.")
  index = _whole_number(index, index_name)
  if not 0 <= index < len(addresses):
    hint = (f" An Indexed Job needs completions and parallelism equal to {count_name}."
            if index_name == INDEX_VARIABLE and count_name else "")
    raise UserInputError(
        f"{index_name}={index} is out of range: {' and '.join(names)} give {len(addresses)} "
        f"workers, numbered 0 to {len(addresses) - 1}.{hint}")
  return _checked(Cluster({"worker": addresses}, "worker", index,
                          ", ".join(names + [index_name])))


def resolve_cluster(options=ClusterOptions(), environ=os.environ):
  """The cluster this process belongs to, from every description given (they must agree).

  Args:
    options: the flags' `ClusterOptions`.
    environ: the environment variables.

  Returns:
    A `Cluster` (possibly of 1 worker), or None when nothing describes a cluster.
  """
  clusters = [cluster for cluster in (_from_tf_config(environ), _from_cluster_spec(environ),
                                      _from_worker_list(options, environ)) if cluster]
  for other in clusters[1:]:
    first = clusters[0]
    if (other.spec, other.task_type, other.task_index) != (
        first.spec, first.task_type, first.task_index):
      raise UserInputError(
          f"{first.source} and {other.source} describe different clusters ({first.describe()} "
          f"vs {other.describe()}): keep one of them.")
  return clusters[0] if clusters else None
