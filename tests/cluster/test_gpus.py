"""GPUs allocated versus GPUs seen (trainer/cluster/gpus.py), on this CPU-only machine."""

import pytest

from trainer.cluster import gpus
from trainer.errors import UserInputError

CUDA_BUILD = {"is_cuda_build": True, "cuda_version": "12.5.1", "cudnn_version": "9"}


@pytest.mark.parametrize("flag,environ,expected", [
    (None, {}, 0),
    (None, {"NVIDIA_VISIBLE_DEVICES": "all"}, 0),  # The CUDA images' default: no count.
    (None, {"NVIDIA_VISIBLE_DEVICES": "void"}, 0),
    (None, {"NVIDIA_VISIBLE_DEVICES": "GPU-1a,GPU-2b"}, 2),  # A device plugin's allocation.
    (None, {"TRAINER_REQUIRE_GPUS": "4", "NVIDIA_VISIBLE_DEVICES": "0"}, 4),
    (1, {"TRAINER_REQUIRE_GPUS": "4"}, 1),  # The flag wins.
    (0, {"NVIDIA_VISIBLE_DEVICES": "0,1"}, 0),  # --require_gpus=0: a CPU run on purpose.
])
def test_allocated_gpus_come_from_the_flag_then_the_environment(flag, environ, expected):
  """--require_gpus, else $TRAINER_REQUIRE_GPUS, else the devices NVIDIA_VISIBLE_DEVICES lists."""
  assert gpus.allocated_gpus(flag, environ)[0] == expected


def test_a_bad_count_is_refused():
  """$TRAINER_REQUIRE_GPUS must be a whole number."""
  with pytest.raises(UserInputError, match="TRAINER_REQUIRE_GPUS='four' is not a whole number"):
    gpus.allocated_gpus(None, {"TRAINER_REQUIRE_GPUS": "four"})


def test_allocated_gpus_that_tensorflow_cannot_see_stop_the_run():
  """On this machine TensorFlow sees no GPU: a run that holds one stops, naming the cause."""
  with pytest.raises(UserInputError) as raised:
    gpus.check_gpus_visible(None, {"NVIDIA_VISIBLE_DEVICES": "GPU-1a"})
  message = str(raised.value)
  assert message.startswith("NVIDIA_VISIBLE_DEVICES=GPU-1a asks for 1 GPUs, but TensorFlow sees 0")
  assert "built for CUDA" in message and "tensorflow[and-cuda]" in message


def test_no_gpus_asked_means_no_check():
  """A CPU run (nothing allocated, or the CUDA images' NVIDIA_VISIBLE_DEVICES=all) goes on."""
  gpus.check_gpus_visible(None, {})
  gpus.check_gpus_visible(None, {"NVIDIA_VISIBLE_DEVICES": "all"})


def test_library_report_names_missing_libraries():
  """A library that does not load is a problem, named by its soname."""
  _, problems = gpus.library_report(CUDA_BUILD, ("libcudnn.so.9", "libnot-a-library.so.1"))
  assert any(p.startswith("libnot-a-library.so.1 does not load") for p in problems), problems


def test_library_report_refuses_a_build_without_cuda():
  """A CPU-only TensorFlow cannot see GPUs at all: the report says what to install."""
  lines, problems = gpus.library_report({"is_cuda_build": False})
  assert problems == ["this TensorFlow is not a CUDA build: install tensorflow[and-cuda]"]
  assert lines[0].startswith("TensorFlow ")


class _FakeCudnn:
  """A cuDNN library stand-in whose cudnnGetVersion returns a fixed version."""

  def __init__(self, version):
    """`version` as cuDNN encodes it: 8906 for 8.9.6, 92800 for 9.28.0."""
    self.cudnnGetVersion = lambda: version  # pylint: disable=invalid-name


def test_cudnn_8_is_a_problem_for_a_cudnn_9_build():
  """The base image's cuDNN 8 beside a TensorFlow built for cuDNN 9 is reported."""
  check = gpus.check_cudnn
  _, problem = check(_FakeCudnn(8906), "/usr/lib/libcudnn.so.8", CUDA_BUILD)
  assert problem.startswith("cuDNN 8.9.6 in /usr/lib/libcudnn.so.8, but TensorFlow needs cuDNN 9")
  description, problem = check(_FakeCudnn(92800), "x", CUDA_BUILD)
  assert (description, problem) == ("cuDNN 9.28.0", None)
