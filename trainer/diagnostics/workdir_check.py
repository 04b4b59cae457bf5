"""The workdir check: write, read back, rename and delete a file there, as the run will.

Local paths go through `tf.io.gfile`, as checkpoints do. gs:// goes through the Cloud Storage
client (as promotion does; it honours STORAGE_EMULATOR_HOST), with the credentials of the
environment: a rename on GCS is a copy and a delete, so this needs the permissions a run needs
(create, get, delete objects). The check names the account it used.
"""

import os
import uuid

import google.auth
import google.auth.transport.requests
import tensorflow as tf

from trainer.diagnostics.report import CheckFailed
from trainer import storage

PROBE_PREFIX = ".preflight-"


def _gcs_identity():
  """The account the Cloud Storage client acts as, in a few words."""
  emulator = os.environ.get("STORAGE_EMULATOR_HOST")
  if emulator:
    return f"no credentials (the storage emulator at {emulator})"
  credentials, _ = google.auth.default()
  credentials.refresh(google.auth.transport.requests.Request())  # Learns the account's email.
  return (getattr(credentials, "service_account_email", None)
          or getattr(credentials, "account", None) or type(credentials).__name__)


def _probe_gcs(workdir, name, renamed, payload):
  """Writes, reads, renames (copies and deletes) and deletes the object `name` under `workdir`."""
  bucket_name, _, prefix = workdir[len("gs://"):].partition("/")
  bucket = storage.default_gcs_client().bucket(bucket_name)
  root = f"{prefix.strip('/')}/" if prefix.strip("/") else ""
  blob = bucket.blob(root + name)
  blob.upload_from_string(payload)
  if blob.download_as_bytes() != payload:
    raise CheckFailed(f"gs://{bucket_name}/{root}{name} read back other bytes than written")
  moved = bucket.rename_blob(blob, root + renamed)
  if moved.download_as_bytes() != payload or bucket.get_blob(root + name) is not None:
    raise CheckFailed(f"the rename to gs://{bucket_name}/{root}{renamed} did not move the object")
  moved.delete()
  return _gcs_identity()


def _probe_local(workdir, name, renamed, payload):
  """Writes, reads, renames and deletes the file `name` in the folder `workdir`."""
  path, new_path = storage.join(workdir, name), storage.join(workdir, renamed)
  tf.io.gfile.makedirs(workdir)
  with tf.io.gfile.GFile(path, "wb") as f:
    f.write(payload)
  with tf.io.gfile.GFile(path, "rb") as f:
    if f.read() != payload:
      raise CheckFailed(f"{path} read back other bytes than written")
  tf.io.gfile.rename(path, new_path)
  if tf.io.gfile.exists(path) or not tf.io.gfile.exists(new_path):
    raise CheckFailed(f"the rename of {path} to {new_path} did not move the file")
  tf.io.gfile.remove(new_path)
  return f"user {os.getuid()}"


def check_workdir(workdir):
  """Writes a file into `workdir`, reads it back, renames it and deletes it; names the account."""
  name = f"{PROBE_PREFIX}{uuid.uuid4().hex}"
  payload = os.urandom(1024)
  probe = _probe_gcs if workdir.startswith("gs://") else _probe_local
  identity = probe(workdir, name, f"{name}.renamed", payload)
  return f"wrote, read, renamed and deleted a file in {workdir}, as {identity}"
