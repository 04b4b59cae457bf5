"""Waiting for the peers of a cluster, on loopback only."""

import socket
import threading
import time

import pytest

from trainer.cluster import peers
from trainer.cluster import resolve
from trainer import errors
from trainer.errors import UserInputError


def free_port():
  """A loopback port that was free a moment ago."""
  with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    return s.getsockname()[1]


def loopback_cluster(index, ports):
  """Worker `index` of a cluster of workers at 127.0.0.1:<port>."""
  return resolve.Cluster({"worker": [f"127.0.0.1:{port}" for port in ports]}, "worker",
                              index, "the test")


def test_workers_starting_apart_find_each_other():
  """Two workers, the second starting later, both get through the wait; each then serves its
  port the way TensorFlow's server would, and a peer still waiting reaches that server."""
  ports = [free_port(), free_port()]
  finished = threading.Barrier(3, timeout=30)
  errors = []

  def worker(index, delay):
    """Waits for the peer, then listens on its own port (as its gRPC server) until both are done."""
    time.sleep(delay)
    try:
      peers.wait_for_peers(loopback_cluster(index, ports), 20, poll_seconds=0.05)
      with socket.create_server(("", ports[index])):
        finished.wait()
    except Exception as e:  # pylint: disable=broad-except
      errors.append(e)
      finished.abort()

  threads = [threading.Thread(target=worker, args=(index, delay), daemon=True)
             for index, delay in ((0, 0.0), (1, 1.0))]
  for thread in threads:
    thread.start()
  finished.wait()
  for thread in threads:
    thread.join(timeout=30)
  assert not errors


def test_missing_peer_times_out_naming_it():
  """A peer that never listens ends the wait after the timeout, with its name and address."""
  ports = [free_port(), free_port()]
  start = time.monotonic()
  with pytest.raises(errors.PeersMissing, match=rf"1 of 1 peers never answered within 0.5 s "
                     rf"\(--cluster_wait_seconds\): worker 1 at 127.0.0.1:{ports[1]} "
                     r"\(no connection: Connection refused\)"):
    peers.wait_for_peers(loopback_cluster(0, ports), 0.5, poll_seconds=0.05)
  assert time.monotonic() - start < 10


def test_unresolved_peer_name_is_reported(monkeypatch):
  """A peer whose name does not resolve (yet) is named with that reason."""
  real_getaddrinfo = socket.getaddrinfo

  def getaddrinfo(host, *args, **kwargs):
    """No DNS records for the peer's name; loopback as usual."""
    if host == "imdb-train-1.imdb-train-workers":
      raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")
    return real_getaddrinfo(host, *args, **kwargs)

  monkeypatch.setattr(socket, "getaddrinfo", getaddrinfo)
  cluster = resolve.Cluster(
      {"worker": [f"127.0.0.1:{free_port()}", "imdb-train-1.imdb-train-workers:2222"]},
      "worker", 0, "the test")
  with pytest.raises(errors.PeersMissing, match="worker 1 at imdb-train-1.imdb-train-workers:2222 "
                     r"\(the name imdb-train-1.imdb-train-workers does not resolve"):
    peers.wait_for_peers(cluster, 0.2, poll_seconds=0.05)


def test_own_port_in_use_is_explained():
  """A worker whose port is taken says so instead of waiting."""
  with socket.create_server(("", 0)) as taken:
    port = taken.getsockname()[1]
    with pytest.raises(UserInputError, match=f"cannot listen on port {port}"):
      peers.wait_for_peers(loopback_cluster(0, [port, free_port()]), 5)
