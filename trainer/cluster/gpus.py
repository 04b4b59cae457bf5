"""GPUs allocated to this process versus GPUs TensorFlow sees, and the CUDA libraries it loads.

A TensorFlow that cannot load the CUDA and cuDNN versions it was built for sees no GPU and trains
on the CPU without a word, while the pod holds its GPUs (tensorflow/tensorflow:2.18+-gpu ships
cuDNN 8 for a TensorFlow built for cuDNN 9). `check_gpus_visible` stops such a run with an error
naming the libraries; `library_problems` is the same diagnosis, run in CI inside the image.
"""

import ctypes
import os

from absl import logging
import tensorflow as tf

from trainer.errors import UserInputError

REQUIRE_VARIABLE = "TRAINER_REQUIRE_GPUS"
_NO_DEVICE_VALUES = ("", "all", "none", "void")  # NVIDIA_VISIBLE_DEVICES naming no count.
# The libraries TensorFlow's GPU build opens by name (soname), and their packages.
CUDA_LIBRARIES = ("libcudart.so.12", "libcublas.so.12", "libcublasLt.so.12", "libcufft.so.11",
                  "libcusolver.so.11", "libcusparse.so.12", "libnccl.so.2", "libcudnn.so.9")


def allocated_gpus(require_gpus=None, environ=os.environ):
  """(count, where it came from) of the GPUs this process must see; (0, None) if none is asked.

  Args:
    require_gpus: the --require_gpus flag, or None when not given.
    environ: the environment: $TRAINER_REQUIRE_GPUS, else NVIDIA_VISIBLE_DEVICES when it lists
      devices (a device plugin sets it; "all", the CUDA base images' default, names no count).
  """
  if require_gpus is not None:
    return require_gpus, f"--require_gpus={require_gpus}"
  value = environ.get(REQUIRE_VARIABLE, "").strip()
  if value:
    if not value.isdigit():
      raise UserInputError(f"{REQUIRE_VARIABLE}={value!r} is not a whole number of GPUs.")
    return int(value), f"{REQUIRE_VARIABLE}={value}"
  devices = environ.get("NVIDIA_VISIBLE_DEVICES", "").strip()
  if devices.lower() in _NO_DEVICE_VALUES:
    return 0, None
  return len(devices.split(",")), f"NVIDIA_VISIBLE_DEVICES={devices}"


def _loaded_path(soname):
  """The file that the dynamic loader opened for `soname` in this process, from /proc/self/maps."""
  with open("/proc/self/maps", encoding="utf-8") as maps:
    paths = {line.split()[-1] for line in maps if soname in line}
  return min(paths, key=len) if paths else None


def check_cuda_runtime(library, path, build_info):
  """(description, problem or None) of the CUDA runtime at `path` against TensorFlow's build."""
  value = ctypes.c_int()
  library.cudaRuntimeGetVersion(ctypes.byref(value))
  found = (value.value // 1000, value.value % 1000 // 10)
  built = tuple(int(part) for part in build_info["cuda_version"].split(".")[:2])
  description = f"CUDA runtime {found[0]}.{found[1]}"
  if found[0] != built[0] or found < built:
    return description, (f"{description} in {path}, but TensorFlow needs "
                         f"{build_info['cuda_version']} (the same major version, no older)")
  return description, None


def check_cudnn(library, path, build_info):
  """(description, problem or None) of the cuDNN at `path` against TensorFlow's build."""
  library.cudnnGetVersion.restype = ctypes.c_size_t
  found = int(library.cudnnGetVersion())
  major_unit = 10000 if found >= 10000 else 1000  # cuDNN 9: 92800 is 9.28.0; cuDNN 8: 8906.
  major = found // major_unit
  description = f"cuDNN {major}.{found % major_unit // 100}.{found % 100}"
  if str(major) != str(build_info["cudnn_version"]).split(".", maxsplit=1)[0]:
    return description, (f"{description} in {path}, but TensorFlow needs cuDNN "
                         f"{build_info['cudnn_version']}")
  return description, None


_VERSION_CHECKS = {"libcudart.so.12": check_cuda_runtime, "libcudnn.so.9": check_cudnn}


def library_report(build_info=None, libraries=CUDA_LIBRARIES):
  """(lines describing the CUDA libraries this process loads, problems found among them).

  Checks that every library of `libraries` loads, and that the CUDA runtime and cuDNN
  versions match what TensorFlow was built for (`tf.sysconfig.get_build_info()`).
  """
  build_info = build_info or tf.sysconfig.get_build_info()
  lines = [f"TensorFlow {tf.__version__} built for CUDA {build_info.get('cuda_version')} and "
           f"cuDNN {build_info.get('cudnn_version')}"]
  if not build_info.get("is_cuda_build"):
    return lines, ["this TensorFlow is not a CUDA build: install tensorflow[and-cuda]"]
  problems = []
  for soname in libraries:
    try:
      library = ctypes.CDLL(soname)
    except OSError as e:
      problems.append(f"{soname} does not load ({e})")
      continue
    path = _loaded_path(soname)
    lines.append(f"{soname}: {path}")
    if soname in _VERSION_CHECKS:
      description, problem = _VERSION_CHECKS[soname](library, path, build_info)
      lines.append(f"  {description}")
      problems += [problem] if problem else []
  return lines, problems


def check_gpus_visible(require_gpus=None, environ=os.environ):
  """Stops the run when GPUs were allocated to it but TensorFlow sees fewer.

  Args:
    require_gpus: the --require_gpus flag, or None (then the environment decides, see
      `allocated_gpus`).
    environ: the environment variables.

  Raises:
    UserInputError: naming the GPUs expected and seen, and the CUDA libraries at fault.
  """
  expected, source = allocated_gpus(require_gpus, environ)
  if not expected:
    return
  seen = len(tf.config.list_physical_devices("GPU"))
  if seen >= expected:
    logging.info("GPUs: %d visible to TensorFlow (%s).", seen, source)
    return
  lines, problems = library_report()
  causes = "; ".join(problems) or "none in the libraries: check the driver (nvidia-smi)"
  raise UserInputError(
      f"{source} asks for {expected} GPUs, but TensorFlow sees {seen}: the job would train on "
      f"the CPU while holding them. {'; '.join(lines)}. Problems: {causes}. Run the image "
      "of docker/Dockerfile (it installs tensorflow[and-cuda]: the CUDA and cuDNN wheels "
      "TensorFlow was built against), or drop --require_gpus for a CPU run.")
