"""Fixtures of the deployment tests: the rendered overlays; a missing tool fails under CI."""

import os

import pytest

from trainer.testing import manifests


def missing_tool(message):
  """Fails the test under CI (CI is set), where every tool must be there; else skips it."""
  if os.environ.get("CI"):
    pytest.fail(message)
  pytest.skip(message)


@pytest.fixture
def composed(tmp_path):
  """`manifests.kustomize_composed` in a new folder; skipped (failed under CI) without kubectl."""
  def render(overlay, *components):
    """The objects of k8s/overlays/<overlay> with k8s/components/<component>... added."""
    folder = tmp_path / "-".join([overlay, *components])
    folder.mkdir()
    try:
      return manifests.kustomize_composed(folder, overlay, components)
    except manifests.KubectlMissing as e:
      missing_tool(str(e))
  return render


@pytest.fixture(scope="module")
def rendered():
  """{overlay: [objects]} of every overlay (skipped, or failed under CI, without kubectl)."""
  try:
    return manifests.render_overlays()
  except manifests.KubectlMissing as e:
    missing_tool(str(e))
