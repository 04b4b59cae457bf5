"""Rendered pods as `docker run` commands (docker/test_image.sh runs them; no docker here)."""

import pytest

from trainer.testing.manifests import docker_run_command
from trainer.testing.manifests import expand_variables
from trainer.testing.manifests import pod_environment
from trainer.testing.manifests import pod_templates_of
from trainer.testing.manifests import quantity_bytes
from trainer.testing.manifests import workload_of

JOB_NAME = "metadata.labels['batch.kubernetes.io/job-name']"
FIELDS = {JOB_NAME: "imdb-retrain-123",
          "metadata.labels['batch.kubernetes.io/controller-uid']": "uid-1",
          "metadata.labels['jobset.sigs.k8s.io/jobset-uid']": "uid-2"}


def test_variables_expand_as_in_kubernetes():
  """$(NAME) of a defined variable is replaced, $$ escapes, an unknown $(NAME) stays."""
  environment = {"DATA_DIR": "/storage/data"}
  assert expand_variables("--data_dir=$(DATA_DIR)", environment) == "--data_dir=/storage/data"
  assert expand_variables("$$(DATA_DIR) $(UNKNOWN)", environment) == "$(DATA_DIR) $(UNKNOWN)"


@pytest.mark.parametrize("quantity,expected", [("10Gi", 10 * 2**30), ("64Mi", 64 * 2**20),
                                               ("1000", 1000), ("2G", 2 * 10**9)])
def test_quantities_in_bytes(quantity, expected):
  """Kubernetes quantities of memory and storage."""
  assert quantity_bytes(quantity) == expected


def test_an_unknown_quantity_is_refused():
  """A unit the helper does not know is an error, not a wrong size."""
  with pytest.raises(ValueError, match="not a quantity"):
    quantity_bytes("1.5Gi")


def test_retrain_environment_resolves_fields_in_order(rendered):
  """The job-name label fills JOB_NAME, which the worker address template then names."""
  objects = rendered["retrain"]
  (template,) = pod_templates_of(workload_of(objects))
  environment = pod_environment(objects, template["spec"]["containers"][0], FIELDS)
  assert environment["JOB_NAME"] == "imdb-retrain-123"
  assert environment["TRAINER_WORKER_ADDRESS_TEMPLATE"] == (
      "imdb-retrain-123-{index}.imdb-retrain:2222")
  with pytest.raises(ValueError, match="JOB_NAME comes from .*job-name"):
    pod_environment(objects, template["spec"]["containers"][0], {})


def test_docker_run_keeps_the_pods_lockdown(rendered):
  """The single-host pod runs read-only, as user 10001, without capabilities, with its command."""
  objects = rendered["single-host"]
  (template,) = pod_templates_of(workload_of(objects))
  environment = pod_environment(objects, template["spec"]["containers"][0], FIELDS)
  environment["WORKDIR"] = "/storage/runs"
  command = docker_run_command(template, environment, "image:test", "worker-0", "host",
                               binds=["/host/storage:/storage"])
  assert command[:5] == ["docker", "run", "-d", "--name=worker-0", "--network=host"]
  for option in ("--read-only", "--cap-drop=ALL", "--security-opt=no-new-privileges",
                 "--user=10001:10001", f"--tmpfs=/tmp:rw,exec,nosuid,size={10 * 2**30}",
                 f"--tmpfs=/home/trainer:rw,exec,nosuid,size={10 * 2**30}",
                 f"--shm-size={2 * 2**30}", "--volume=/host/storage:/storage",
                 "--env=TRAINER_REQUIRE_GPUS=4", "--entrypoint=python"):
    assert option in command, option
  image = command.index("image:test")
  assert command[image:] == ["image:test", "-m", "trainer.train",
                             "--data_dir=gs://BUCKET/imdb/data", "--workdir=/storage/runs/uid-1",
                             "--preset=default"]


def test_docker_run_refuses_other_networks(rendered):
  """Test containers stay on loopback: only the host's network or none."""
  (template,) = pod_templates_of(workload_of(rendered["prepare"]))
  with pytest.raises(ValueError, match="only host or none"):
    docker_run_command(template, {}, "image:test", "c", "bridge")


def test_docker_run_with_another_command(rendered):
  """The image's other commands run in the same pod, with the command replaced."""
  (template,) = pod_templates_of(workload_of(rendered["prepare"]))
  command = docker_run_command(template, {"X": "1"}, "image:test", "c", "none",
                               command=["saved_model_cli", "show", "--dir=$(X)"])
  assert "--entrypoint=saved_model_cli" in command
  assert command[-3:] == ["image:test", "show", "--dir=1"]
