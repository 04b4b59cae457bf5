"""The storage layer: local paths and gs:// URIs, atomic writes, JSON files, compare-and-swap.

Files go through `tf.io.gfile` (local paths, gs://, ram://). Every writer writes under a
temporary sibling name that `atomic_path` renames into place, so readers see the old file or the
whole new one. A store (`open_store`: a `LocalStore` folder or a `GcsStore` gs://bucket/prefix)
holds "/"-separated names and adds what promotion needs: create-only writes and a
compare-and-swap (an fcntl lock and a rename locally, a generation precondition on GCS).
"""

import contextlib
import errno
import fcntl
import json
import os
import shutil
import tempfile
import uuid

from absl import logging
from google.api_core import exceptions as gcs_exceptions
import google.auth.exceptions
from google.cloud import storage as gcs
import tensorflow as tf

from trainer import errors
from trainer.errors import UserInputError

TEMP_MARKER = ".tmp-"
LOCK_FILE = ".promote.lock"  # Serializes a LocalStore's compare-and-swaps.
# Storage errors that may pass: GCS down or slow (503, 504, 429), or the retries of TensorFlow's
# GCS file system used up (it reports ABORTED then). Others (permission, no such bucket, a full
# local disk) need a person.
_TRANSIENT_TF_ERRORS = (tf.errors.UnavailableError, tf.errors.DeadlineExceededError,
                        tf.errors.AbortedError)
_TRANSIENT_ERRNOS = (errno.ETIMEDOUT, errno.ECONNRESET, errno.ECONNREFUSED, errno.EAGAIN,
                     errno.EHOSTUNREACH, errno.ENETUNREACH)
_TRANSIENT_GCS_ERRORS = (gcs_exceptions.ServiceUnavailable, gcs_exceptions.TooManyRequests,
                         gcs_exceptions.InternalServerError, gcs_exceptions.GatewayTimeout,
                         gcs_exceptions.DeadlineExceeded, gcs_exceptions.RetryError)
STORAGE_ERRORS = (tf.errors.OpError, OSError, gcs_exceptions.GoogleAPIError)


def is_transient(error, path):
  """Whether a storage `error` about `path` may pass by itself (the job should retry)."""
  if isinstance(error, tf.errors.ResourceExhaustedError):
    return "://" in path  # A rate limit on GCS; a full disk here.
  if isinstance(error, OSError):
    return error.errno in _TRANSIENT_ERRNOS
  return isinstance(error, _TRANSIENT_TF_ERRORS + _TRANSIENT_GCS_ERRORS)


@contextlib.contextmanager
def reported_failures(path, what, fix):
  """Inside the block, a storage error about `path` becomes one the mains report in one line.

  Args:
    path: the local path or URI being read or written.
    what: what failed, e.g. "Saving the checkpoint of step 8 in gs://b/run/checkpoints".
    fix: what a person should do when the error will not pass by itself.

  Raises:
    errors.StorageUnavailable: for an error that may pass (exit 43: the job retries).
    UserInputError: for one that will not (exit 2).
    The error itself when it comes from other workers (`errors.from_other_workers`).
  """
  try:
    yield
  except STORAGE_ERRORS as e:
    if errors.from_other_workers(e):
      raise
    cause = f"{what} failed ({type(e).__name__}: {errors.first_line(e)})"
    if is_transient(e, path):
      raise errors.StorageUnavailable(
          f"{cause}: the storage is unavailable for now. Exiting with code "
          f"{errors.RETRY_EXIT_CODE} so that the job is retried.") from e
    raise UserInputError(f"{cause}. {fix}") from e


def join(directory, *names):
  """Joins path parts for a local directory or a URI such as gs://bucket/dir."""
  if "://" in directory:
    return "/".join([directory.rstrip("/"), *names])
  return os.path.join(directory, *names)


def check_run_folder(path, flag):
  """Refuses a run folder whose name (its last part) is empty: an unexpanded run id.

  `--workdir=$(WORKDIR)/$(RUN_ID)` with an empty RUN_ID (a label the cluster does not set)
  would put every run in the same folder, each resuming the last one's checkpoints.

  Args:
    path: the run folder, a local path or URI.
    flag: the flag (or flags) that named it, for the message, e.g. "--workdir".

  Raises:
    UserInputError: naming the folder, and the JobSet version that sets the run's id.
  """
  if path.rstrip() and not path.endswith(("/", os.sep)):
    return
  raise UserInputError(
      f"{flag}={path!r}: the run folder's name, its last part, is empty. Under Kubernetes the "
      "run id (RUN_ID, a label of the pod) expanded to nothing: a JobSet's pods carry the label "
      "jobset.sigs.k8s.io/jobset-uid from JobSet v0.9.0 on, so upgrade its controller. "
      "Elsewhere, name the folder without a trailing '/'.")


def temporary_name(path):
  """Returns a unique sibling name for `path` that readers never mistake for it."""
  return f"{path}{TEMP_MARKER}{uuid.uuid4().hex}"


def final_name(path):
  """The name a `temporary_name` (or a leftover of an interrupted write) stands for."""
  return path.split(TEMP_MARKER)[0]


@contextlib.contextmanager
def atomic_path(path):
  """Yields a temporary sibling name of `path`, renamed onto `path` when the block succeeds.

  Write a file there (with GFile, TFRecordWriter, open...) or, for a local `path`, a folder: it
  replaces `path` in one rename (an existing local folder is deleted just before). If the block
  or the rename fails, `path` stays as it was and the temporary name is removed.

  Args:
    path: the final local path or URI.
  """
  temporary_path = temporary_name(path)
  try:
    yield temporary_path
    publish(temporary_path, path)
  except BaseException:
    _remove(temporary_path)
    raise


def publish(temporary_path, path):
  """Renames a fully written temporary file (or local folder) onto `path` in one step."""
  if "://" not in path and os.path.isdir(path):
    shutil.rmtree(path)  # rename(2) replaces a file, never a folder that holds files.
  tf.io.gfile.rename(temporary_path, path, overwrite=True)


def _remove(path):
  """Deletes the file or folder `path` if there is one."""
  if tf.io.gfile.isdir(path):
    tf.io.gfile.rmtree(path)
  elif tf.io.gfile.exists(path):
    tf.io.gfile.remove(path)


def check_writable(folder, flag):
  """Creates `folder` and writes a file there: fails now, not after an hour, when it cannot.

  Args:
    folder: a local path or URI.
    flag: the flag that named it, for the message, e.g. "--workdir".

  Raises:
    UserInputError: naming the folder, the flag and the error (errors.StorageUnavailable when
      it may pass).
  """
  probe = join(folder, ".write_probe")
  with reported_failures(folder, f"Writing to {flag}={folder}", "Choose a folder this job can "
                         "write (a local path or a gs:// bucket it has access to)."):
    tf.io.gfile.makedirs(folder)
    with tf.io.gfile.GFile(probe, "w") as f:
      f.write("ok")
    tf.io.gfile.remove(probe)


def relative_files(local_dir, last=None):
  """Names of the files under the local folder `local_dir`, "/"-separated, relative, sorted.

  Files named `last` (a base name) come after all others: copied in this order, a folder whose
  `last` file is there is whole (an export's saved_model.pb, say).
  """
  names = sorted(os.path.relpath(os.path.join(folder, name), local_dir).replace(os.sep, "/")
                 for folder, _, names in os.walk(local_dir) for name in names)
  return sorted(names, key=lambda name: name.rsplit("/", 1)[-1] == last)


def write_text_atomically(path, text):
  """Writes `text` to `path` so that readers see the old file or the whole new one."""
  with atomic_path(path) as temporary_path, tf.io.gfile.GFile(temporary_path, "w") as f:
    f.write(text)


def json_text(value):
  """`value` as the JSON text of the project's files: indented, keys sorted, a final newline."""
  return json.dumps(value, indent=2, sort_keys=True) + "\n"


def write_json_atomically(path, value):
  """Writes `value` as indented JSON to `path` atomically."""
  write_text_atomically(path, json_text(value))


def read_json(path):
  """Reads a JSON file through gfile."""
  with tf.io.gfile.GFile(path) as f:
    return json.load(f)


def parse_json_object(data, location, fix):
  """The JSON object in `data`, read from `location`; `fix` ends the error if it is not one."""
  try:
    value = json.loads(data)
  except ValueError as e:
    raise UserInputError(f"{location} is not valid JSON ({e}): {fix}") from e
  if not isinstance(value, dict):
    raise UserInputError(f"{location} holds no JSON object: {fix}")
  return value


# --- Stores: a folder of "/"-separated names with a compare-and-swap, local or on GCS.


class LocalStore:
  """A local folder; compare-and-swaps run under an exclusive fcntl lock."""

  def __init__(self, root):
    """Opens the folder `root` (created on first write)."""
    self._root = os.path.abspath(root)
    if os.path.exists(self._root) and not os.path.isdir(self._root):
      raise UserInputError(f"{self._root} is a file: pass a directory.")

  def location(self, name=""):
    """The path of `name` (a "/"-separated name relative to the root)."""
    return os.path.join(self._root, *name.split("/")) if name else self._root

  def subfolder(self, name):
    """The store of the folder `name` inside this one."""
    return LocalStore(self.location(name))

  def list_files(self, under=""):
    """Names of all files under the folder `under`, relative to the root, in sorted order."""
    prefix = f"{under}/" if under else ""
    return [prefix + name for name in relative_files(self.location(under))]

  def read_versioned(self, name):
    """The bytes of `name` (None if missing) and a token for `replace_if`: the bytes again."""
    try:
      with open(self.location(name), "rb") as f:
        data = f.read()
    except FileNotFoundError:
      data = None
    return data, data

  def replace_if(self, name, data, token):
    """Writes `data` to `name` if it still holds what `read_versioned` saw; whether it did."""
    os.makedirs(self._root, exist_ok=True)
    with open(self.location(LOCK_FILE), "a") as lock:
      fcntl.flock(lock, fcntl.LOCK_EX)  # Released when the file closes.
      if self.read_versioned(name)[1] != token:
        return False
      self._write_atomically(name, data)
      return True

  def write_new(self, name, data):
    """Creates the file `name` (a new, unique name) holding `data`."""
    self._write_atomically(name, data)

  def _write_atomically(self, name, data):
    """Writes `data` to `name` under a temporary name, synced, then renamed into place."""
    path = self.location(name)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with atomic_path(path) as temporary_path, open(temporary_path, "wb") as f:
      f.write(data)
      f.flush()
      os.fsync(f.fileno())

  def put_tree(self, local_dir, name, last=None):
    """Copies the local folder `local_dir` to `name`, which appears complete or not at all.

    (`last` is for object stores: a renamed folder appears whole.)
    """
    del last
    with atomic_path(self.location(name)) as temporary_path:
      shutil.copytree(local_dir, temporary_path, copy_function=_copy_and_sync)

  def delete_tree(self, name):
    """Deletes the folder `name` if it exists."""
    if os.path.exists(self.location(name)):
      shutil.rmtree(self.location(name))

  @contextlib.contextmanager
  def local_copy(self):
    """Yields a local folder holding the files of this store: the folder itself."""
    yield self._root


def _copy_and_sync(source, destination):
  """Copies a file with its metadata and flushes it to disk before it is renamed into place."""
  shutil.copy2(source, destination)
  with open(destination, "rb+") as f:
    os.fsync(f.fileno())


class GcsStore:
  """Objects under gs://bucket/prefix; compare-and-swap by a generation precondition."""

  def __init__(self, url, client):
    """Opens `url` (gs://bucket or gs://bucket/prefix) through a google.cloud.storage client."""
    bucket_name, _, prefix = url[len("gs://"):].partition("/")
    if not bucket_name:
      raise UserInputError(f"{url}: name a bucket, as in gs://bucket/prefix.")
    self._client = client
    self._bucket = client.bucket(bucket_name)
    self._prefix = prefix.strip("/")
    self._url = f"gs://{bucket_name}/{self._prefix}" if self._prefix else f"gs://{bucket_name}"

  def location(self, name=""):
    """The gs:// URL of `name` (a "/"-separated name relative to the root)."""
    return join(self._url, name) if name else self._url

  def subfolder(self, name):
    """The store of the folder `name` inside this one."""
    return GcsStore(self.location(name), self._client)

  def _object_name(self, name):
    """The object name of `name`."""
    return f"{self._prefix}/{name}" if self._prefix else name

  def _blob(self, name):
    """The blob of `name`."""
    return self._bucket.blob(self._object_name(name))

  def list_files(self, under=""):
    """Names of all objects under the folder `under`, relative to the root, in sorted order."""
    root = f"{self._prefix}/" if self._prefix else ""
    prefix = f"{root}{under}/" if under else root
    return sorted(blob.name[len(root):] for blob in self._client.list_blobs(self._bucket,
                                                                            prefix=prefix)
                  if not blob.name.endswith("/"))

  def read_versioned(self, name):
    """The bytes of `name` (None if missing) and their generation (0 if missing)."""
    while True:  # Until the generation and the bytes come from one version of the object.
      blob = self._bucket.get_blob(self._object_name(name))
      if blob is None:
        return None, 0
      generation = blob.generation  # A download may reset it from a response header.
      try:
        return blob.download_as_bytes(if_generation_match=generation), generation
      except (gcs_exceptions.NotFound, gcs_exceptions.PreconditionFailed):
        logging.info("%s changed while it was read; reading it again.", self.location(name))

  def replace_if(self, name, data, token):
    """Writes `data` to `name` if its generation is still `token`; whether it did."""
    try:
      # No automatic retry: a retried write that had succeeded would fail its precondition.
      self._blob(name).upload_from_string(data, content_type="application/json",
                                          if_generation_match=token, retry=None)
    except gcs_exceptions.PreconditionFailed:
      return False
    return True

  def write_new(self, name, data):
    """Creates the object `name` holding `data`; an existing object is never overwritten."""
    self._blob(name).upload_from_string(data, content_type="application/json",
                                        if_generation_match=0)

  def put_tree(self, local_dir, name, last=None):
    """Uploads every file of the local folder `local_dir` under `name`, files named `last` last.

    A copy killed half-way is not whole; with `last` given, it lacks that file.
    """
    for relative in relative_files(local_dir, last):
      self._blob(f"{name}/{relative}").upload_from_filename(
          os.path.join(local_dir, *relative.split("/")), if_generation_match=0)

  def delete_tree(self, name):
    """Deletes every object under the folder `name`."""
    for relative in self.list_files(name):
      self._blob(relative).delete()

  @contextlib.contextmanager
  def local_copy(self):
    """Yields a temporary local folder holding a download of every object of this store."""
    with tempfile.TemporaryDirectory() as local_dir:
      for name in self.list_files():
        path = os.path.join(local_dir, *name.split("/"))
        os.makedirs(os.path.dirname(path), exist_ok=True)
        self._blob(name).download_to_filename(path)
      yield local_dir


def default_gcs_client():
  """A google.cloud.storage client from the environment (honours STORAGE_EMULATOR_HOST)."""
  try:
    return gcs.Client()
  except google.auth.exceptions.DefaultCredentialsError as e:
    raise UserInputError(f"No Google Cloud credentials for gs:// paths ({e}); run `gcloud auth "
                         "application-default login` or set GOOGLE_APPLICATION_CREDENTIALS.")


def open_store(location, gcs_client=None):
  """The store of a local path or gs:// URL; `gcs_client` defaults to `default_gcs_client()`."""
  if location.startswith("gs://"):
    return GcsStore(location, gcs_client or default_gcs_client())
  if "://" in location:
    raise UserInputError(f"{location}: use a local path or gs://bucket/prefix.")
  return LocalStore(location)
