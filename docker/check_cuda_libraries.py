"""Inside the image: the CUDA and cuDNN libraries TensorFlow would load match its build.

  docker run --entrypoint python -v $PWD/docker:/checks:ro IMAGE /checks/check_cuda_libraries.py

Every library of trainer.cluster.gpus.CUDA_LIBRARIES must load from the nvidia wheels that
tensorflow[and-cuda] installs (not from the base image's system CUDA or cuDNN 8), and the CUDA
runtime and cuDNN versions must match tf.sysconfig.get_build_info(). Exits 1 otherwise.
"""

import sys

from trainer.cluster import gpus


def main():
  """Prints the libraries and their versions; exits 1 on a problem."""
  lines, problems = gpus.library_report()
  print("\n".join(lines))
  problems += [f"{line.split(':')[0]} loads from outside the nvidia wheels: {line}"
               for line in lines if ".so." in line and "-packages/nvidia/" not in line]
  if problems:
    print("PROBLEMS:\n" + "\n".join(problems))
    sys.exit(1)
  print(f"ok: {len(gpus.CUDA_LIBRARIES)} libraries from the nvidia wheels, versions as built")


if __name__ == "__main__":
  main()
