"""An in-memory fake of the few google.cloud.storage calls that trainer.storage.GcsStore makes.

Why a fake: gcp-storage-emulator 2026.7.19 (PyPI) ignores `ifGenerationMatch`. Against it, a
second upload with if_generation_match=0 and an upload with a stale generation both succeed
(checked with google-cloud-storage 3.17.1), so it cannot show that two promotions never both
win. This fake implements the GCS generation semantics that the promotion relies on: every
write of an object gives it a new, larger generation; `get_blob` reports it; a write or a
download with if_generation_match=g fails with 412 PreconditionFailed unless the object's
generation is g (0 for a write: it must not exist). It is thread-safe, so threads can race
through one client. It is not GCS: it models these semantics as documented,
nothing else (no buckets to create, no metadata, no retries).
"""

import itertools
import threading

from google.api_core import exceptions


class FakeClient:
  """Stands in for google.cloud.storage.Client: buckets of objects kept in a dict."""

  def __init__(self):
    """An empty store; set `before_write(object_name)` or `before_delete(object_name)` to run
    code before each write or delete."""
    self._objects = {}  # (bucket, object name) -> (bytes, generation)
    self._lock = threading.Lock()
    self._generations = itertools.count(1)
    self.before_write = lambda name: None  # Runs outside the lock, to stage races or faults.
    self.before_delete = lambda name: None

  def bucket(self, name):
    """The bucket `name`."""
    return FakeBucket(self, name)

  def list_blobs(self, bucket_or_name, prefix=""):
    """Blobs of a bucket whose names start with `prefix`, in name order."""
    bucket = getattr(bucket_or_name, "name", bucket_or_name)
    with self._lock:
      names = sorted(name for b, name in self._objects if b == bucket and name.startswith(prefix))
    return [FakeBlob(self, bucket, name) for name in names]

  def files(self, bucket, prefix):
    """{name relative to prefix: bytes} of the objects under `prefix`, for assertions."""
    with self._lock:
      return {name[len(prefix):]: data for (b, name), (data, _) in self._objects.items()
              if b == bucket and name.startswith(prefix)}

  def read(self, bucket, name, if_generation_match=None):
    """(bytes, generation) of an object, if the precondition holds; NotFound if there is none."""
    with self._lock:
      if (bucket, name) not in self._objects:
        raise exceptions.NotFound(f"No such object: {bucket}/{name}")
      data, generation = self._objects[bucket, name]
      if if_generation_match is not None and if_generation_match != generation:
        raise exceptions.PreconditionFailed(
            f"{bucket}/{name}: generation {generation}, precondition {if_generation_match}")
      return data, generation

  def write(self, bucket, name, data, if_generation_match):
    """Stores `data` as a new generation, if the precondition holds."""
    self.before_write(name)
    with self._lock:
      generation = self._objects.get((bucket, name), (None, 0))[1]
      if if_generation_match is not None and if_generation_match != generation:
        raise exceptions.PreconditionFailed(
            f"{bucket}/{name}: generation {generation}, precondition {if_generation_match}")
      self._objects[bucket, name] = (bytes(data), next(self._generations))

  def delete(self, bucket, name):
    """Deletes an object; NotFound if there is none."""
    self.before_delete(name)
    with self._lock:
      if self._objects.pop((bucket, name), None) is None:
        raise exceptions.NotFound(f"No such object: {bucket}/{name}")


class FakeBucket:
  """Stands in for google.cloud.storage.Bucket."""

  def __init__(self, client, name):
    """A handle on the bucket `name` of `client`."""
    self.client = client
    self.name = name

  def blob(self, name):
    """The blob `name` of this bucket."""
    return FakeBlob(self.client, self.name, name)

  def get_blob(self, name):
    """The blob `name` with its current generation, or None if there is no such object."""
    blob = self.blob(name)
    try:
      blob.generation = self.client.read(self.name, name)[1]
    except exceptions.NotFound:
      return None
    return blob


class FakeBlob:
  """Stands in for google.cloud.storage.Blob: the calls promote makes, with preconditions."""

  def __init__(self, client, bucket, name):
    """A handle on the object `name`; `generation` is set by a read."""
    self._client = client
    self._bucket = bucket
    self.name = name
    self.generation = None

  def download_as_bytes(self, if_generation_match=None):
    """The object's bytes, if the generation precondition holds; sets `generation` to theirs."""
    data, self.generation = self._client.read(self._bucket, self.name, if_generation_match)
    return data

  def download_to_filename(self, filename):
    """Writes the object's bytes to a local file."""
    with open(filename, "wb") as f:
      f.write(self.download_as_bytes())

  def upload_from_string(self, data, content_type=None, if_generation_match=None, retry=None):
    """Writes `data` (str or bytes) if the generation precondition holds."""
    del content_type, retry  # Not modelled.
    data = data.encode() if isinstance(data, str) else data
    self._client.write(self._bucket, self.name, data, if_generation_match)

  def upload_from_filename(self, filename, if_generation_match=None):
    """Writes a local file's bytes if the generation precondition holds."""
    with open(filename, "rb") as f:
      self._client.write(self._bucket, self.name, f.read(), if_generation_match)

  def delete(self):
    """Deletes the object."""
    self._client.delete(self._bucket, self.name)
