"""Docker containers for docker/check_image.py: start, wait with a limit, stop, logs, clean up."""

import re
import subprocess
import time

COMMAND_TIMEOUT_SECONDS = 300  # Bound of one docker client call (docker stop waits inside it).


def docker(*arguments, timeout=COMMAND_TIMEOUT_SECONDS, check=True):
  """Runs `docker ARGUMENTS` with a time limit; returns its stdout (raises on failure if check)."""
  result = subprocess.run(["docker", *arguments], capture_output=True, text=True, timeout=timeout,
                          check=False)
  if check and result.returncode:
    raise RuntimeError(f"docker {' '.join(arguments[:3])} ... failed ({result.returncode}):\n"
                       f"{result.stderr[-3000:]}")
  return result.stdout


class Container:
  """One container created by a `docker run -d` command; removed by `remove()`."""

  def __init__(self, run_command):
    """Starts the container of `run_command` (a list beginning with docker run -d --name=...)."""
    (self.name,) = [part.split("=", 1)[1] for part in run_command if part.startswith("--name=")]
    self.host = None  # The pod's host name in a cluster, when it plays a worker of one.
    docker("rm", "-f", self.name, check=False)  # Left over by an interrupted earlier run.
    docker(*run_command[1:])

  def logs(self):
    """Everything the container printed so far (stdout and stderr)."""
    result = subprocess.run(["docker", "logs", self.name], capture_output=True, text=True,
                            timeout=COMMAND_TIMEOUT_SECONDS, check=False)
    return result.stdout + result.stderr

  def wait(self, timeout):
    """The container's exit code once it ends; raises TimeoutError after `timeout` seconds."""
    try:
      return int(docker("wait", self.name, timeout=timeout).strip())
    except subprocess.TimeoutExpired:
      raise TimeoutError(f"{self.name} still runs after {timeout:.0f} s:\n"
                         f"{self.logs()[-3000:]}") from None

  def wait_for_log(self, pattern, timeout):
    """The first match of the regular expression `pattern` in the logs, polled until `timeout`."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
      match = re.search(pattern, self.logs())
      if match:
        return match
      if docker("inspect", "--format={{.State.Running}}", self.name).strip() != "true":
        break
      time.sleep(1)
    raise TimeoutError(f"{self.name} never logged {pattern!r}:\n{self.logs()[-3000:]}")

  def stop(self, grace_seconds):
    """docker stop (SIGTERM, SIGKILL after `grace_seconds`); returns the seconds until it ended."""
    start = time.monotonic()
    docker("stop", f"--time={grace_seconds}", self.name, timeout=grace_seconds + 60)
    return time.monotonic() - start

  def restart(self):
    """Starts the stopped container again, with the same command (a pod's replacement)."""
    docker("start", self.name)

  def remove(self):
    """Removes the container, running or not."""
    docker("rm", "-f", self.name, check=False)
