"""The built image, run as a cluster would run it (docker/test_image.sh runs this after the build).

  PYTHONPATH=. .venv/bin/python docker/check_image.py --image=imdb-bilstm-trainer:ci

1. The image's commands in a locked-down container (the prepare overlay's pod: read-only root,
   no capabilities, no privilege escalation, user 10001, only /tmp and $HOME writable, no
   network): prepare the tarball, train --preset=local, predict, saved_model_cli; the CUDA and
   cuDNN libraries the image loads match TensorFlow's build; --require_gpus stops a GPU-less run.
2. The manifests' own pod specs, rendered with kustomize: each container's command, arguments
   and environment as rendered, with only the storage (gs://BUCKET/imdb -> a mounted folder)
   and the workers' ports swapped (their host names resolve to loopback); several workers on the
   host network. A misspelt flag in each pod's command exits 2 with one line; multi-host and
   jobset run side by side without meeting; the preflight component runs on multi-host's pods.
3. docker stop on one worker mid-run: every worker exits 42 at the same step; started again they
   finish with the weights of an uninterrupted run (--deterministic). The SIGTERM-to-exit time of
   one worker and of two is measured.
Real reviews (../shared/data) when present, generated ones otherwise. Every container has a time
limit; the script prints the time of each step and exits 1 at the first failure.
"""

import argparse
import io
import os
import pathlib
import re
import shutil
import sys
import tarfile
import time
import traceback

from containers import Container
from trainer.testing.cluster import free_port_prefix
from trainer.testing import manifests
from trainer.testing import synthetic_imdb

REPO = manifests.REPO
SHARED_TARBALL = REPO.parent / "shared" / "data" / "aclImdb_v1_labeled.tar.gz"
BUCKET_PREFIX = "gs://BUCKET/imdb"  # The manifests' storage; runs here use STORAGE instead.
STORAGE = "/storage"
SUBSET_REVIEWS_PER_FOLDER = 300  # Reviews per train/test pos/neg folder for the manifests' runs.
GRACE_SECONDS = 120  # The manifests' terminationGracePeriodSeconds.
RUN_TIMEOUT_SECONDS = 900
TRAINER_UID = 10001
WEIGHTS = r"Final weights sha256 .*: ([0-9a-f]{64})"
JOB_NAME_LABEL = "metadata.labels['batch.kubernetes.io/job-name']"


def step(name):
  """Decorator: prints the step's name and, when it ends, its time in seconds."""

  def decorate(function):
    """Wraps `function` with the report."""

    def timed(*args, **kwargs):
      """Runs the step, printing its name and duration."""
      print(f"== {name}", flush=True)
      start = time.monotonic()
      result = function(*args, **kwargs)
      print(f"== {name}: ok, {time.monotonic() - start:.0f} s", flush=True)
      return result
    return timed
  return decorate


def check(condition, message):
  """Raises AssertionError with `message` unless `condition`."""
  if not condition:
    raise AssertionError(message)


# --- Data and storage.


def writable_folder(path):
  """Creates `path` owned by the image's user (the containers write there); returns it."""
  path.mkdir(parents=True, exist_ok=True)
  os.chown(path, TRAINER_UID, TRAINER_UID)
  return path


def _subset_member(name, limit):
  """Whether the subset keeps a tarball member: reviews with ids below `limit`, and other files."""
  match = re.fullmatch(r"aclImdb/(train|test)/(pos|neg|unsup)/(\d+)_\d+\.txt", name)
  return not match or (match.group(2) != "unsup" and int(match.group(3)) < limit)


def subset_tarball(source, destination, limit):
  """Writes the reviews of `source` with ids below `limit` (and their movies' URLs) as a tarball."""
  with tarfile.open(source) as reader, tarfile.open(destination, "w:gz") as writer:
    for member in reader:
      if not member.isfile() or not _subset_member(member.name, limit):
        continue
      content = reader.extractfile(member).read()
      if re.search(r"/urls_(pos|neg)\.txt$", member.name):
        content = b"".join(content.splitlines(keepends=True)[:limit])
      info = tarfile.TarInfo(member.name)
      info.size = len(content)
      writer.addfile(info, io.BytesIO(content))
  return destination


def stage_tarballs(work):
  """(full tarball, small tarball, description): real reviews when present, else generated."""
  if SHARED_TARBALL.exists():
    small = subset_tarball(SHARED_TARBALL, work / "subset.tar.gz", SUBSET_REVIEWS_PER_FOLDER)
    return SHARED_TARBALL, small, f"real reviews ({SHARED_TARBALL})"
  files = synthetic_imdb.generate(reviews_per_folder=SUBSET_REVIEWS_PER_FOLDER)
  generated = synthetic_imdb.write_tarball(files, work / "generated.tar.gz")
  return generated, generated, "generated reviews (no ../shared/data here)"


# --- Running pods.


class Runs:
  """Runs pod templates of the image as containers, with the storage in one host folder."""

  def __init__(self, image, storage):
    """Containers run `image` by default; `storage` (a host folder) replaces gs://BUCKET/imdb."""
    self.image = image
    self.storage = storage
    self.runs = 0
    self.port_prefixes = set()  # Handed out to workers (two overlays may start side by side).

  def environment(self, objects, template, field_values=None):
    """The rendered container's environment with the bucket swapped for the mounted folder."""
    environment = manifests.pod_environment(
        objects, manifests.main_container_of(template), field_values or pod_fields("pod"))
    return {name: value.replace(BUCKET_PREFIX, STORAGE) for name, value in environment.items()}

  def start(self, template, environment, network, command=None, binds=(), image=None, hosts=()):
    """Starts one container of `template` (the image and command as given); returns it."""
    self.runs += 1
    name = f"imdb-check-{os.getpid()}-{self.runs}"
    return Container(manifests.docker_run_command(
        template, environment, image or self.image, name, network,
        binds=[f"{self.storage}:{STORAGE}", *binds], command=command, hosts=hosts))

  def run(self, template, environment, network, command=None, binds=(), expect=0, image=None):
    """Runs one container to its end; returns its logs after checking its exit code."""
    container = self.start(template, environment, network, command, binds, image)
    try:
      code = container.wait(RUN_TIMEOUT_SECONDS)
      logs = container.logs()
      check(code == expect, f"exit code {code}, not {expect}:\n{logs[-3000:]}")
      return logs
    finally:
      container.remove()

  def start_workers(self, objects, extra_args=(), field_values=None):
    """Starts every worker of a rendered overlay on loopback; returns the containers.

    The workers keep their rendered host names (TRAINER_WORKER_ADDRESS_TEMPLATE), which resolve
    to loopback in every worker (docker's --add-host: a cluster's DNS), on free ports instead of
    the pods' one; they must see 0 GPUs; each gets JOB_COMPLETION_INDEX as an Indexed Job's pod.
    """
    (template,) = manifests.pod_templates_of(manifests.workload_of(objects))
    environment = self.environment(objects, template, field_values)
    if "TRAINER_REQUIRE_GPUS" in environment:
      environment["TRAINER_REQUIRE_GPUS"] = "0"  # No GPU here (check_cuda_libraries tests 4).
    workers = int(environment.get("TRAINER_NUM_WORKERS", 1))
    hosts = []
    if "TRAINER_WORKER_ADDRESS_TEMPLATE" in environment:
      host = environment["TRAINER_WORKER_ADDRESS_TEMPLATE"].rsplit(":", 1)[0]
      hosts = [f"{host.replace('{index}', str(index))}:127.0.0.1" for index in range(workers)]
      prefix = free_port_prefix(workers, exclude=self.port_prefixes)
      self.port_prefixes.add(prefix)
      environment["TRAINER_WORKER_ADDRESS_TEMPLATE"] = f"{host}:{prefix}{{index}}"
    container = manifests.main_container_of(template)
    command = container["command"] + container.get("args", []) + list(extra_args)
    started = [self.start(template, {**environment, "JOB_COMPLETION_INDEX": str(index)}, "host",
                          command=command, hosts=hosts) for index in range(workers)]
    for worker, host in zip(started, hosts):
      worker.host = host.split(":")[0]  # Its name in the cluster's DNS.
    return started


def finish(workers, expect=0):
  """The logs of workers run to their end, after checking their exit codes; removes them."""
  try:
    codes = [worker.wait(RUN_TIMEOUT_SECONDS) for worker in workers]
    logs = [worker.logs() for worker in workers]
    for index, (code, log) in enumerate(zip(codes, logs)):
      check(code == expect, f"worker {index}: exit code {code}, not {expect}:\n{log[-3000:]}")
    return logs
  finally:
    for worker in workers:
      worker.remove()


def final_weights(logs):
  """The final weights' checksum that every worker logged; checks that they agree."""
  checksums = [re.findall(WEIGHTS, log)[-1:] for log in logs]
  check(all(checksums) and len({c[0] for c in checksums}) == 1,
        f"the workers' final weights differ or are missing: {checksums}")
  return checksums[0][0]


def render(overlay):
  """The objects of a k8s/overlays/ folder, rendered by kubectl kustomize."""
  return manifests.kustomize(REPO / "k8s" / "overlays" / overlay)


def pod_fields(run_id):
  """The pod fields that the manifests read (fieldRef), as a cluster fills them for a run."""
  return {JOB_NAME_LABEL: f"imdb-job-{run_id}",
          "metadata.labels['batch.kubernetes.io/controller-uid']": f"uid-{run_id}",
          "metadata.labels['jobset.sigs.k8s.io/jobset-uid']": f"uid-{run_id}"}


# --- 1. The image's commands.


@step("image: prepare the tarball, train --preset=local, predict, saved_model_cli (no network)")
def check_commands(runs, tarball):
  """The image's commands in the prepare overlay's locked-down pod, on the full tarball."""
  objects = render("prepare")
  (template,) = manifests.pod_templates_of(manifests.workload_of(objects))
  environment = runs.environment(objects, template)
  tarball_bind = [f"{tarball}:/input/aclImdb.tar.gz:ro"]
  python = ["python", "-m"]
  runs.run(template, environment, "none", binds=tarball_bind, command=python + [
      "trainer.prepare", "--input=/input/aclImdb.tar.gz", f"--output_dir={STORAGE}/image/data"])
  runs.run(template, environment, "none", command=python + [
      "trainer.train", f"--data_dir={STORAGE}/image/data", f"--workdir={STORAGE}/image/run",
      "--preset=local"])
  predictions = runs.run(template, environment, "none", command=python + [
      "trainer.predict", f"--model={STORAGE}/image/run", "A wonderful, moving film."])
  print("\n".join(line for line in predictions.splitlines() if "wonderful" in line))
  (export,) = sorted((runs.storage / "image" / "run" / "export").iterdir())[-1:]
  signatures = runs.run(template, environment, "none", command=[
      "saved_model_cli", "show", "--dir", f"{STORAGE}/image/run/export/{export.name}", "--all"])
  check("serving_default" in signatures, f"no serving_default signature:\n{signatures}")


@step("image: the CUDA and cuDNN libraries it loads match tf.sysconfig.get_build_info()")
def check_cuda_libraries(runs, base_image):
  """docker/check_cuda_libraries.py passes in the image, fails in its base; GPUs are checked."""
  objects = render("single-host")
  (template,) = manifests.pod_templates_of(manifests.workload_of(objects))
  environment = runs.environment(objects, template)
  binds = [f"{REPO / 'docker'}:/checks:ro", f"{REPO / 'trainer'}:/opt/checks-src/trainer:ro"]
  command = ["python", "/checks/check_cuda_libraries.py"]
  report = runs.run(template, environment, "none", binds=binds, command=command)
  print("\n".join(line for line in report.splitlines()
                  if ".so." in line or line.startswith(("  CUDA", "  cuDNN", "ok:"))))
  base_report = runs.run(template, {**environment, "PYTHONPATH": "/opt/checks-src"}, "none",
                         binds=binds, command=command, expect=1, image=base_image)
  check("libcudnn.so.9 does not load" in base_report, base_report[-3000:])
  print("the same check in the base image, without the wheels, fails: "
        f"{re.search(r'libcudnn.so.9 does not load.*', base_report).group(0)[:200]}")
  refusal = runs.run(template, environment, "none", expect=2, command=[
      "python", "-m", "trainer.train", "--synthetic_data", "--synthetic_steps=2",
      "--preset=local", "--workdir=/tmp/run"])
  check("TRAINER_REQUIRE_GPUS=4 asks for 4 GPUs, but TensorFlow sees 0" in refusal,
        refusal[-3000:])
  print(refusal.strip().splitlines()[-1][:400])


# --- 2. The manifests' pod specs.


@step("manifests: the prepare overlay's pod")
def check_prepare_pod(runs, tarball):
  """The prepare Job's pod prepares $(INPUT) (the small tarball) into $(DATA_DIR)."""
  objects = render("prepare")
  (template,) = manifests.pod_templates_of(manifests.workload_of(objects))
  environment = runs.environment(objects, template)
  shutil.copyfile(tarball, environment["INPUT"].replace(STORAGE, str(runs.storage)))
  runs.run(template, environment, "none")


def check_training_pods(runs, overlay, run_id):
  """An overlay's workers run its command to the end with identical final weights."""
  print(f"== manifests: the {overlay} overlay's pods", flush=True)
  start = time.monotonic()
  logs = finish(runs.start_workers(render(overlay), field_values=pod_fields(run_id)))
  print(f"== manifests: {overlay}: {len(logs)} worker(s), exit 0, final weights "
        f"{final_weights(logs)[:16]}..., {time.monotonic() - start:.0f} s", flush=True)


@step("manifests: a misspelt flag in each pod's command exits 2 with one line (all at once)")
def check_bad_flags(runs):
  """Each overlay's pod, with --global_batch_sise added to its command, fails at once: exit 2."""
  started = []
  for overlay in ("prepare", "single-host", "multi-host", "jobset", "retrain"):
    objects = render(overlay)
    (template,) = manifests.pod_templates_of(manifests.workload_of(objects))
    container = manifests.main_container_of(template)
    command = container["command"] + container.get("args", []) + ["--global_batch_sise=96"]
    started.append((overlay, runs.start(template, runs.environment(objects, template), "none",
                                        command=command)))
  for overlay, logs in zip([overlay for overlay, _ in started],
                           finish([container for _, container in started], expect=2)):
    errors = [line for line in logs.splitlines() if line.startswith("error:")]
    check(len(errors) == 1 and "global_batch_sise" in errors[0] and "Traceback" not in logs,
          f"{overlay}: not one error line naming the flag:\n{logs[-3000:]}")
    print(f"   {overlay}: exit 2, {errors[0][:100]}", flush=True)


@step("manifests: multi-host and jobset side by side (4 workers at once), apart")
def check_side_by_side(runs):
  """Two overlays' workers at once: their host names and run folders differ, both finish."""
  overlays = ("multi-host", "jobset")
  workers = {overlay: runs.start_workers(render(overlay), field_values=pod_fields(overlay))
             for overlay in overlays}
  names = {overlay: {worker.host for worker in started} for overlay, started in workers.items()}
  logs = {overlay: finish(started) for overlay, started in workers.items()}
  check(not set.intersection(*names.values()), f"the overlays' workers share names: {names}")
  for overlay in overlays:
    (run,) = runs.storage.rglob(f"uid-{overlay}")
    check((run / "checkpoints").is_dir(), f"{overlay}: nothing in its run folder {run}")
    print(f"   {overlay}: {len(logs[overlay])} worker(s) at {sorted(names[overlay])}, run "
          f"{run.relative_to(runs.storage)}, final weights {final_weights(logs[overlay])[:16]}...",
          flush=True)


@step("manifests: the preflight component on multi-host's pods (2 workers)")
def check_preflight_pods(runs, work_dir):
  """python -m trainer.preflight in the training pods: peers, all-reduce across them, exit 0."""
  folder = writable_folder(work_dir / "preflight-overlay")
  objects = manifests.kustomize_composed(folder, "multi-host", ["preflight"])
  logs = finish(runs.start_workers(objects, ["--preflight_steps=3"], pod_fields("preflight")))
  screens = [match.group(0) for match in (
      re.search(r"preflight of .*?\npreflight: [^\n]*", log, re.S) for log in logs) if match]
  check(len(screens) == len(logs), f"a worker printed no screen:\n{logs[-1][-3000:]}")
  for screen in screens:
    check(re.search(r"ok +all-reduce .* over 2 replica\(s\) on 2 worker\(s\)", screen)
          and ", 0 failed," in screen, f"the preflight's screen:\n{screen[-3000:]}")
  print(screens[0], flush=True)


@step("manifests: the retrain overlay's pods (2 workers), then production promoted")
def check_retrain_pods(runs):
  """Retraining on the manifests' workers prepares, trains and promotes its candidate."""
  check_training_pods(runs, "retrain", "retrain")
  current = runs.storage / "production" / "CURRENT.json"
  check(current.exists(), f"retraining promoted nothing: no {current}")


# --- 3. Preemption: stop, resume, the same weights.


def stop_and_resume(runs, overlay, run_id, extra_args):
  """Stops the last worker mid-run, checks all saved and exited 42, restarts them; their logs."""
  workers = runs.start_workers(render(overlay), extra_args, pod_fields(run_id))
  try:
    workers[-1].wait_for_log(r"train \| step: [1-9]\d*/", RUN_TIMEOUT_SECONDS)
    stopped_at = time.time()  # The containers write files with this clock too.
    seconds = workers[-1].stop(GRACE_SECONDS)
    codes = [worker.wait(GRACE_SECONDS) for worker in workers]
    logs = [worker.logs() for worker in workers]
    check(codes == [42] * len(workers), f"exit codes {codes} after SIGTERM, not all 42:\n"
          f"{logs[0][-3000:]}")
    saved = [set(re.findall(r"saved a checkpoint at step (\d+)", log)) for log in logs]
    steps = set().union(*saved)
    check(all(saved) and len(steps) == 1, f"the workers' saved steps differ: {saved}")
    step_saved = steps.pop()
    (index,) = runs.storage.rglob(f"uid-{run_id}/checkpoints/ckpt-{step_saved}.index")
    print(f"   {len(workers)} worker(s), saved at step {step_saved}: checkpoint written "
          f"{index.stat().st_mtime - stopped_at:.1f} s after SIGTERM, exit 42 after "
          f"{seconds:.1f} s", flush=True)
    for worker in workers:
      worker.restart()
  except BaseException:
    for worker in workers:
      worker.remove()
    raise
  return finish(workers)


@step("preemption: docker stop mid-run, exit 42 at one step, resumed to the same weights")
def check_preemption(runs):
  """multi-host (--deterministic) stopped and resumed ends as if never stopped; one worker too."""
  extra = ["--deterministic", "--log_every_steps=2"]
  reference = finish(runs.start_workers(render("multi-host"), extra, pod_fields("reference")))
  resumed = stop_and_resume(runs, "multi-host", "stopped", extra)
  check(final_weights(resumed) == final_weights(reference),
        "the resumed run's weights differ from the uninterrupted run's")
  stop_and_resume(runs, "single-host", "stopped-single", ["--log_every_steps=2"])


def main():
  """Runs every check against --image; exits 1 at the first failure."""
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--image", required=True, help="The image built from docker/Dockerfile.")
  parser.add_argument("--base_image", required=True,
                      help="The image's base: the CUDA check must fail there.")
  parser.add_argument("--work_dir", required=True, type=pathlib.Path,
                      help="An empty folder for the data and runs (removed by the caller).")
  args = parser.parse_args()
  tarball, small, description = stage_tarballs(args.work_dir)
  print(f"data: {description}", flush=True)
  runs = Runs(args.image, writable_folder(args.work_dir / "storage"))
  checks = [lambda: check_commands(runs, tarball),
            lambda: check_cuda_libraries(runs, args.base_image),
            lambda: check_prepare_pod(runs, small)]
  checks += [lambda: check_bad_flags(runs),
             lambda: check_training_pods(runs, "single-host", "single-host"),
             lambda: check_side_by_side(runs), lambda: check_preflight_pods(runs, args.work_dir),
             lambda: check_retrain_pods(runs), lambda: check_preemption(runs)]
  for passed, run_check in enumerate(checks):
    try:
      run_check()
    except Exception:  # pylint: disable=broad-except  (reported, then the script fails)
      traceback.print_exc()
      print(f"{passed} passed, 1 failed")
      sys.exit(1)
  print(f"{len(checks)} passed, 0 failed")


if __name__ == "__main__":
  main()
