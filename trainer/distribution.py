"""The cluster, the distribution strategy and the chief: the only module reading cluster settings.

A cluster of workers describes itself in one of these ways (several at once are fine when they
agree, as Vertex AI's TF_CONFIG and CLUSTER_SPEC do):

- TF_CONFIG, `{"cluster": {"chief": [...], "worker": [...]}, "task": {"type": ..., "index": ...}}`
  (Kubeflow TFJob, Vertex AI, by hand): the chief is the "chief" task, else worker 0.
- CLUSTER_SPEC (Vertex AI): worker pool "workerpool0" is the chief, "workerpool1" the workers.
- A Kubernetes Indexed Job: JOB_COMPLETION_INDEX (set by Kubernetes), TRAINER_NUM_WORKERS and
  TRAINER_WORKER_ADDRESS_TEMPLATE, a host:port with "{index}" such as
  `imdb-train-{index}.imdb-train-workers:2222` (pod hostname and headless Service); worker 0 is
  the chief.
- Flags: --cluster_workers=host:port,... or --worker_address_template with --num_workers, and
  --worker_index; a flag overrides the environment variable of the same meaning.

Only chief and worker tasks train; parameter servers and evaluators of a cluster are ignored.
Create the strategy first thing in a process: MultiWorkerMirroredStrategy must exist before
TensorFlow runs any op.
"""

import contextlib
import dataclasses
import json
import os
import socket
import time

from absl import flags
from absl import logging
import tensorflow as tf

from trainer.errors import UserInputError

STRATEGY_CHOICES = ("auto", "default", "one_device", "mirrored", "multi_worker")
TRAINING_ROLES = ("chief", "worker")  # In this order: the chief first.
VERTEX_POOL_ROLES = {"workerpool0": "chief", "workerpool1": "worker"}
INDEX_VARIABLE = "JOB_COMPLETION_INDEX"
NUM_WORKERS_VARIABLE = "TRAINER_NUM_WORKERS"
ADDRESS_TEMPLATE_VARIABLE = "TRAINER_WORKER_ADDRESS_TEMPLATE"
DEFAULT_WAIT_SECONDS = 600.0
_PROBE_SECONDS = 5.0  # Longest wait for one connection attempt.
_REPORT_EVERY_SECONDS = 30.0  # How often a long wait logs who is still missing.


@dataclasses.dataclass(frozen=True)
class ClusterOptions:
  """The cluster as given by flags (each overriding its environment variable), and the wait."""
  workers: tuple[str, ...] = ()  # --cluster_workers: host:port of every worker, the chief first.
  address_template: str | None = None  # --worker_address_template: host:port with "{index}".
  num_workers: int | None = None  # --num_workers: how many workers the template makes.
  worker_index: int | None = None  # --worker_index: which worker this process is.
  wait_seconds: float = DEFAULT_WAIT_SECONDS  # --cluster_wait_seconds: patience for the peers.


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

  def tf_config(self):
    """The TF_CONFIG value that describes this cluster and task to TensorFlow."""
    return {"cluster": self.spec, "task": {"type": self.task_type, "index": self.task_index}}

  def describe(self):
    """This task and the cluster in a few words, for logs and messages."""
    return f"{self.task_type} {self.task_index} of {self.spec}"


# --- Reading a cluster description.


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


def _split_address(address, where):
  """(host, port) of "host:port" ("[v6 address]:port" too); `where` names it in errors."""
  host, _, port = str(address).rpartition(":")
  host = host.strip("[]")
  if not host or not port.isdigit() or not 0 < int(port) < 65536:
    raise UserInputError(f"{where}: {address!r} is not host:port (e.g. "
                         "imdb-train-0.imdb-train-workers:2222).")
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
    _split_address(address, f"{cluster.source}, {task}")
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
  template, template_name = _setting(options.address_template, "--worker_address_template",
                                     environ, ADDRESS_TEMPLATE_VARIABLE)
  index, index_name = _setting(options.worker_index, "--worker_index", environ, INDEX_VARIABLE)
  if not (options.workers or template or count is not None or options.worker_index is not None):
    return None  # JOB_COMPLETION_INDEX alone: an Indexed Job that is not a training cluster.
  if count is not None:
    count = _whole_number(count, count_name)
    if count < 1:
      raise UserInputError(f"{count_name}={count}: a cluster needs at least 1 worker.")
  if options.workers and template:
    raise UserInputError(f"Give the workers' addresses once: --cluster_workers or "
                         f"{template_name}, not both.")
  if options.workers:
    addresses = list(options.workers)
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
                           "imdb-train-{index}.imdb-train-workers:2222.")
    addresses = [template.replace("{index}", str(i)) for i in range(count)]
    names = [template_name, count_name]
  else:
    raise UserInputError(
        f"{count_name or '--worker_index'} needs the workers' addresses: set "
        f"{ADDRESS_TEMPLATE_VARIABLE} or --worker_address_template (a host:port with {{index}}, "
        "e.g. imdb-train-{index}.imdb-train-workers:2222), or list them with "
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


# --- Waiting for the peers.


@contextlib.contextmanager
def _listening(address):
  """Inside the block, a non-blocking socket listens on the port of `address`, all interfaces."""
  _, port = _split_address(address, "this worker's address")
  dual_stack = {"family": socket.AF_INET6, "dualstack_ipv6": True} if (
      socket.has_dualstack_ipv6()) else {}
  try:
    listener = socket.create_server(("", port), backlog=128, **dual_stack)
  except OSError as e:
    raise UserInputError(
        f"This worker ({address}) cannot listen on port {port}: {e.strerror or e}. Free the port "
        "or give this worker another one (workers on one machine need different ports).") from e
  listener.setblocking(False)
  try:
    yield listener
  finally:
    listener.close()


def _drop_connections(listener):
  """Accepts and closes the connections waiting on `listener`: the probes of peers."""
  while True:
    try:
      connection, _ = listener.accept()
    except (BlockingIOError, InterruptedError):
      return
    connection.close()


def _connection_problem(address, timeout_seconds):
  """Why `address` cannot be reached now, or None when it accepts a TCP connection."""
  host, port = _split_address(address, "peer address")
  try:
    with socket.create_connection((host, port), timeout=timeout_seconds):
      return None
  except socket.gaierror as e:
    return f"the name {host} does not resolve: {e.strerror}"
  except OSError as e:
    return f"no connection: {e.strerror or e}"


def wait_for_peers(cluster, timeout_seconds, poll_seconds=1.0):
  """Returns once every other task of `cluster` resolves (DNS) and accepts a TCP connection.

  MultiWorkerMirroredStrategy's constructor waits silently for peers that never come; this waits
  with a deadline and names them. The chicken-and-egg: a peer's port is served by its TensorFlow
  gRPC server, which only starts inside its strategy's constructor, after its own wait. So while
  it waits, each process listens on its own port itself and drops the connections: waiting
  peers see each other. Once every peer has answered, it closes that socket and creates the
  strategy, whose server takes the port over. A peer still probing meanwhile is refused for a
  moment, tries again and reaches that server: any listener on a peer's port means the peer is
  up, its waiting socket or its gRPC server. (A peer that answers and then dies before its
  strategy starts still leaves TensorFlow waiting: that gap is seconds, the wait's is minutes.)

  Args:
    cluster: a `Cluster`.
    timeout_seconds: how long to wait in all.
    poll_seconds: pause between rounds of connection attempts.

  Raises:
    UserInputError: naming the peers that did not answer in time, and why.
  """
  start = time.monotonic()
  deadline = start + timeout_seconds
  next_report = start + _REPORT_EVERY_SECONDS
  pending = {task: address for task, address in cluster.tasks if address != cluster.address}
  problems = {}
  logging.info("Cluster from %s: this is %s at %s; waiting up to %.0f s for %d peers.",
               cluster.source, f"{cluster.task_type} {cluster.task_index}", cluster.address,
               timeout_seconds, len(pending))
  with _listening(cluster.address) as listener:
    while True:
      for task, address in list(pending.items()):
        _drop_connections(listener)
        probe_seconds = min(_PROBE_SECONDS, max(deadline - time.monotonic(), 0.1))
        problems[task] = _connection_problem(address, probe_seconds)
        if problems[task] is None:
          del pending[task]
      _drop_connections(listener)
      now = time.monotonic()
      missing = "; ".join(f"{task} at {address} ({problems[task]})"
                          for task, address in pending.items())
      if not pending:
        logging.info("Every peer answered after %.1f s.", now - start)
        return
      if now >= deadline:
        raise UserInputError(
            f"{len(pending)} of {cluster.num_workers - 1} peers never answered within "
            f"{timeout_seconds:g} s (--cluster_wait_seconds): {missing}. Check that they run "
            f"and that {cluster.source} gives their right addresses.")
      if now >= next_report:
        logging.info("Still waiting for %d peers: %s.", len(pending), missing)
        next_report = now + _REPORT_EVERY_SECONDS
      time.sleep(min(poll_seconds, max(deadline - now, 0)))


# --- The strategy.


def build_strategy(name="auto", options=ClusterOptions()):
  """Creates the strategy named by --strategy, after waiting for the peers of a cluster.

  Args:
    name: "auto" (a cluster of several workers -> multi_worker; several GPUs -> mirrored; else
      one_device), "default", "one_device", "mirrored" or "multi_worker".
    options: the cluster given by flags (`ClusterOptions`), and how long to wait for it.

  Returns:
    A `tf.distribute.Strategy`.
  """
  if name not in STRATEGY_CHOICES:
    raise UserInputError(f"--strategy={name}: choose one of {STRATEGY_CHOICES}.")
  cluster = resolve_cluster(options)
  workers = cluster.num_workers if cluster else 1
  if name == "auto":
    if workers > 1:
      name = "multi_worker"
    else:
      name = "mirrored" if len(tf.config.list_physical_devices("GPU")) > 1 else "one_device"
  elif workers > 1 and name != "multi_worker":
    raise UserInputError(f"--strategy={name} trains in one process, but {cluster.source} "
                         f"describes {workers} workers: use --strategy=multi_worker or auto.")
  if name == "multi_worker":
    if workers > 1:
      wait_for_peers(cluster, options.wait_seconds)
      if cluster.source != "TF_CONFIG":
        os.environ["TF_CONFIG"] = json.dumps(cluster.tf_config())  # What TensorFlow reads.
    strategy = tf.distribute.MultiWorkerMirroredStrategy()
  elif name == "mirrored":
    strategy = tf.distribute.MirroredStrategy()
  elif name == "one_device":
    strategy = tf.distribute.OneDeviceStrategy(
        "/gpu:0" if tf.config.list_physical_devices("GPU") else "/cpu:0")
  else:
    strategy = tf.distribute.get_strategy()
  logging.info("Strategy: %s with %d replicas in sync (%s).", name,
               strategy.num_replicas_in_sync, type(strategy).__name__)
  return strategy


def task(strategy):
  """(task_type, task_id) of this process; ("chief", 0) outside a multi-worker cluster."""
  resolver = getattr(strategy, "cluster_resolver", None)
  if resolver is None or not resolver.task_type:
    return "chief", 0
  return resolver.task_type, resolver.task_id


def is_chief(strategy):
  """Whether this process writes checkpoints, summaries and results.

  The chief is the "chief" task, or worker 0 when the cluster has no "chief" entry.
  """
  task_type, task_id = task(strategy)
  if task_type == "chief":
    return True
  cluster = strategy.cluster_resolver.cluster_spec().as_dict()
  return task_type == "worker" and task_id == 0 and "chief" not in cluster


def num_workers(strategy):
  """Number of worker processes taking part in training."""
  resolver = getattr(strategy, "cluster_resolver", None)
  if resolver is None or not resolver.task_type:
    return 1
  spec = resolver.cluster_spec().as_dict()
  return sum(len(spec.get(role, [])) for role in TRAINING_ROLES)  # No ps or evaluators.


# --- Command line.


def define_flags():
  """Defines the flags that describe a cluster without TF_CONFIG, and the wait for its peers."""
  flags.DEFINE_list("cluster_workers", None, "host:port of every worker, worker 0 (the chief) "
                    "first, with --worker_index: a cluster without TF_CONFIG.")
  flags.DEFINE_string("worker_address_template", None, "host:port of worker {index}, e.g. "
                      "imdb-train-{index}.imdb-train-workers:2222, with --num_workers "
                      f"(default: ${ADDRESS_TEMPLATE_VARIABLE}).")
  flags.DEFINE_integer("num_workers", None, "How many workers --worker_address_template makes "
                       f"(default: ${NUM_WORKERS_VARIABLE}).", lower_bound=1)
  flags.DEFINE_integer("worker_index", None, "Which worker this process is; 0 is the chief "
                       f"(default: ${INDEX_VARIABLE}).", lower_bound=0)
  flags.DEFINE_float("cluster_wait_seconds", DEFAULT_WAIT_SECONDS, "How long every worker "
                     "waits for the others to answer before it stops, naming them.",
                     lower_bound=0)


def cluster_options_from_flags():
  """The `ClusterOptions` given by the flags of `define_flags`."""
  values = flags.FLAGS
  return ClusterOptions(workers=tuple(values.cluster_workers or ()),
                        address_template=values.worker_address_template,
                        num_workers=values.num_workers, worker_index=values.worker_index,
                        wait_seconds=values.cluster_wait_seconds)
