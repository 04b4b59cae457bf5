"""TF Serving's warm-up file: requests it replays when it loads a model, before taking traffic.

The file is `<export>/assets.extra/tf_serving_warmup_requests`, a TFRecord file of
`PredictionLog` protos; each holds a `PredictRequest` for the `serving_default` signature. The
requests cover one short, one typical and one truncated review alone, and a batch of 64, so
the first real request does not pay for building the model's functions.
"""

import itertools

import tensorflow as tf
from tensorflow_serving.apis import predict_pb2
from tensorflow_serving.apis import prediction_log_pb2

from trainer import storage

WARMUP_FILE = "assets.extra/tf_serving_warmup_requests"
INPUT_NAME = "reviews"
# A 54-word review: the typical request the serving gate times.
TYPICAL_REVIEW = (
    "I went in expecting very little and came out surprised. The two leads have real chemistry, "
    "the script finds jokes in places you would not look for them, and the last twenty minutes "
    "are genuinely moving. It drags a little in the middle and one subplot goes nowhere, but "
    "this is the warmest film I have seen this year.")
SHORT_REVIEW = "Dull, and far too long."
BATCH = 64


def warmup_batches():
  """The review batches of the warm-up requests: three single reviews and one batch of 64."""
  long_review = " ".join([TYPICAL_REVIEW] * 40)  # Longer than any max_length: truncated.
  singles = [[SHORT_REVIEW], [TYPICAL_REVIEW], [long_review]]
  mixed = list(itertools.islice(itertools.cycle([SHORT_REVIEW, TYPICAL_REVIEW, long_review]),
                                BATCH))
  return singles + [mixed]


def write(export_dir, signature):
  """Writes the warm-up requests for `signature` into the export at `export_dir`."""
  path = storage.join(export_dir, WARMUP_FILE)
  tf.io.gfile.makedirs(storage.join(export_dir, "assets.extra"))
  with storage.atomic_path(path) as temporary_path:
    with tf.io.TFRecordWriter(temporary_path) as writer:
      for reviews in warmup_batches():
        request = predict_pb2.PredictRequest()
        request.model_spec.signature_name = signature
        request.inputs[INPUT_NAME].CopyFrom(tf.make_tensor_proto(reviews, dtype=tf.string))
        log = prediction_log_pb2.PredictionLog(
            predict_log=prediction_log_pb2.PredictLog(request=request))
        writer.write(log.SerializeToString())


def read(export_dir):
  """The warm-up requests of an export: a list of (signature name, reviews as bytes)."""
  requests = []
  for record in tf.data.TFRecordDataset(storage.join(export_dir, WARMUP_FILE)):
    log = prediction_log_pb2.PredictionLog.FromString(record.numpy())
    request = log.predict_log.request
    reviews = tf.make_ndarray(request.inputs[INPUT_NAME]).tolist()
    requests.append((request.model_spec.signature_name, reviews))
  return requests
