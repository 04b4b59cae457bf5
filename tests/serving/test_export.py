"""Export on raw text, reloading in fresh processes, odd inputs, the predict CLI, Vertex outputs."""

import base64
import json
import os
import subprocess
import sys

import keras
import numpy as np
import pytest
import tensorflow as tf
from tensorflow_serving.apis import prediction_log_pb2

from trainer import config as config_lib
from trainer.data import prepared_dataset
from trainer.data import records
from trainer.data import text
from trainer.errors import UserInputError
from trainer.modeling import model as model_lib
from trainer.serving import evaluation
from trainer.serving import export
from trainer.serving import predict
from trainer.serving import review_signals
from trainer.serving import serving_gate
from trainer.training import train_lib

pytestmark = pytest.mark.slow  # Every test here trains, spawns processes or runs Beam.

# Reviews are longer than 12 tokens: the export must truncate them as training did.
CONFIG = config_lib.override(config_lib.get_preset("local"), vocab_size=40, max_length=12)
ODD_REVIEWS = ["", "   \n\t ", "x" * 1_000_000, "Très bien ! 日本語の映画 😀 ¿Qué?",
               "<html><br /><b>Great</b> film<br/></html>", "great " * 5000]
# Loads an export in a fresh process; reviews arrive base64-encoded (raw bytes, any encoding).
_LOAD_AND_RUN = """
import base64, json, sys
import tensorflow as tf
from tensorflow_serving.apis import prediction_log_pb2
model = tf.saved_model.load(sys.argv[1])
reviews = tf.constant([base64.b64decode(r) for r in json.load(sys.stdin)])
outputs = model.signatures["serving_default"](reviews=reviews)
ids = model.signatures["token_ids"](reviews=reviews)["output_0"]
print(json.dumps({**{name: outputs[name].numpy().tolist() for name in (
                      "probability", "label", "token_count", "oov_share")},
                  "token_ids": ids.numpy().tolist()}))
"""


def run_in_fresh_process(args, stdin=""):
  """Runs a Python command in a new process; returns its stdout."""
  completed = subprocess.run([sys.executable, *args], input=stdin, capture_output=True,
                             text=True, timeout=120, check=False)
  assert completed.returncode == 0, completed.stderr[-3000:]
  return completed.stdout


@pytest.fixture(scope="module")
def trained_model():
  """A model with random weights: what matters is that the export computes what it computes."""
  keras.utils.set_random_seed(3)
  return model_lib.build_model(CONFIG)


@pytest.fixture(scope="module")
def exported(tmp_path_factory, prepared_dir, trained_model):
  """An export of `trained_model` with the prepared dataset's vocabulary."""
  vocabulary = text.load_vocabulary(os.path.join(prepared_dir, "vocab.txt"))
  classifier = export.build_classifier(CONFIG, trained_model.get_weights(), vocabulary)
  return export.export(classifier, str(tmp_path_factory.mktemp("exports")),
                       {"test": {"accuracy": 0.5}})


def test_exported_model_in_a_fresh_process_matches_the_training_pipeline(
    exported, prepared_dir, corpus_files, trained_model):
  """Same ids as the TFRecords after the pipeline's truncation, same probabilities as training;
  the whole review's token count and unknown share, from the same tokenizer."""
  files = prepared_dataset.split_files(prepared_dir, "test")
  serialized = next(iter(tf.data.TFRecordDataset(files).batch(32)))
  tokens, _ = records.parse(serialized)
  expected_ids = text.truncate(tokens, CONFIG.input.max_length, CONFIG.input.keep).to_tensor()
  expected_probabilities = tf.sigmoid(trained_model(expected_ids, training=False)[:, 0]).numpy()
  reviews = [corpus_files[f"aclImdb/{name.decode()}"]
             for name in records.parse_names(serialized).numpy()]
  assert max(len(row) for row in tokens.to_list()) > CONFIG.input.max_length

  served = json.loads(run_in_fresh_process(
      ["-c", _LOAD_AND_RUN, exported],
      json.dumps([base64.b64encode(review).decode() for review in reviews])))

  np.testing.assert_array_equal(served["token_ids"], expected_ids.numpy())
  np.testing.assert_allclose(served["probability"], expected_probabilities, atol=1e-6)
  np.testing.assert_array_equal(served["label"], (expected_probabilities >= 0.5).astype(int))
  counts = tokens.row_lengths().numpy()
  np.testing.assert_array_equal(served["token_count"], counts)
  unknown = tf.reduce_sum(tf.cast(tokens == text.OOV_ID, tf.int32), axis=1).numpy()
  np.testing.assert_allclose(served["oov_share"], unknown / counts, rtol=1e-6)
  assert 0 < max(served["oov_share"]) < 1  # Some unknown words (a vocabulary of 40).


def test_the_drift_baseline_is_what_serving_sees_of_the_validation_reviews(
    prepared_dir, corpus_files, trained_model, exported):
  """The export's summary of the validation split, made from the TFRecords at export time, is
  what its serving signatures give on the raw validation reviews."""
  metadata = prepared_dataset.load_metadata(prepared_dir)
  classifier = export.build_classifier(CONFIG, trained_model.get_weights(),
                                       text.load_vocabulary(os.path.join(prepared_dir,
                                                                         "vocab.txt")))
  baseline = review_signals.baseline(classifier, prepared_dir, metadata)
  files = prepared_dataset.split_files(prepared_dir, "validation")
  names = [name.decode() for batch in tf.data.TFRecordDataset(files).batch(64)
           for name in records.parse_names(batch).numpy()]
  texts = [corpus_files[f"aclImdb/{name}"] for name in names]
  served = review_signals.summarize(evaluation.signals(exported, texts), CONFIG.data.vocab_size,
                                    metadata["splits"]["validation"]["movies"])
  assert baseline == served and baseline["reviews"] == len(texts) > 0
  assert baseline["oov_tokens"] > 0 and sum(baseline["token_histogram"]) > 0


def test_saved_model_cli_runs_the_export(exported):
  """TensorFlow's own saved_model_cli (the TF1 loader TF Serving uses) runs the signature."""
  output = run_in_fresh_process(
      ["-m", "tensorflow.python.tools.saved_model_cli", "run", "--dir", exported, "--tag_set",
       "serve", "--signature_def", "serving_default", "--input_exprs",
       'reviews=["a wonderful film", "dull"]'])
  assert "Result for output key probability" in output
  assert "Result for output key sentiment" in output


def test_export_holds_tf_serving_warmup_requests_the_serving_gate_replays(exported):
  """assets.extra/tf_serving_warmup_requests: PredictionLog records TF Serving can replay; the
  serving gate loads the export in a fresh process, replays them and times it."""
  logs = [prediction_log_pb2.PredictionLog.FromString(record.numpy()) for record in
          tf.data.TFRecordDataset(os.path.join(exported, "assets.extra",
                                               "tf_serving_warmup_requests"))]
  batches = [tf.make_ndarray(log.predict_log.request.inputs["reviews"]).shape for log in logs]
  assert batches == [(1,), (1,), (1,), (64,)]
  assert {log.predict_log.request.model_spec.signature_name for log in logs} == {
      "serving_default"}
  report = serving_gate.measure(exported)
  assert report["loaded"] and report["warmup_requests"] == 4, report
  assert 0 < report["latency_ms_p50"] <= report["latency_ms_p99"]
  assert report["batch_size"] == 64 and report["reviews_per_s"] > 0


def test_odd_inputs_never_crash_it(exported):
  """Empty, blank, 1 MB, non-ASCII, HTML, invalid UTF-8 and an empty batch all get answers."""
  serve = tf.saved_model.load(exported).signatures["serving_default"]
  reviews = [review.encode() for review in ODD_REVIEWS] + [b"\xff\xfe bad \xc3 bytes"]
  outputs = serve(reviews=tf.constant(reviews))
  assert outputs["token_count"].numpy()[[0, 1, 2]].tolist() == [0, 0, 1]  # Empty, blank, x...x.
  assert outputs["oov_share"].numpy()[[0, 1, 2]].tolist() == [0.0, 0.0, 1.0]
  assert outputs["probability"].shape == (len(reviews),)
  assert np.all(np.isfinite(outputs["probability"].numpy()))
  assert set(outputs["sentiment"].numpy()) <= {b"positive", b"negative"}
  assert serve(reviews=tf.constant([], tf.string))["label"].shape == (0,)


def test_versions_increase_and_metadata_travels_with_the_export(tmp_path, exported):
  """A new export is a newer version; its metadata says what it is; temporaries are gone."""
  root = os.path.dirname(exported)
  metadata = export.load_metadata(exported)
  assert metadata["test"] == {"accuracy": 0.5} and metadata["format"] == export.EXPORT_FORMAT
  assert text.load_vocabulary(os.path.join(exported, export.VOCAB_FILE))[:2] == ["<pad>", "<unk>"]
  classifier = export.build_classifier(CONFIG, model_lib.build_model(CONFIG).get_weights(),
                                       text.load_vocabulary(os.path.join(exported, "vocab.txt")))
  newer = export.export(classifier, root, {})
  assert int(os.path.basename(newer)) > int(os.path.basename(exported))
  assert export.latest_export(root) == newer
  workdir = tmp_path / "run"
  workdir.mkdir()
  os.symlink(root, workdir / "export")  # A training workdir: its exports are in export/.
  for named in (newer, root):  # An export, its folder of versions.
    assert export.resolve_export(named) == newer
  assert export.resolve_export(str(workdir)) == os.path.join(workdir, "export",
                                                            os.path.basename(newer))
  assert sorted(os.listdir(root)) == sorted([os.path.basename(exported), os.path.basename(newer)])
  unversioned = str(tmp_path / "model")
  for _ in range(2):  # The second export replaces the first.
    assert export.export(classifier, unversioned, {}, versioned=False) == unversioned
  assert os.path.exists(os.path.join(unversioned, "saved_model.pb"))


def test_not_an_export_gives_a_clear_error(tmp_path, prepared_dir):
  """A folder that is not a SavedModel of this project is named as such."""
  with pytest.raises(UserInputError, match="not a SavedModel"):
    predict.load(prepared_dir)
  with pytest.raises(UserInputError, match="does not exist"):
    predict.load(str(tmp_path / "missing"))
  tf.saved_model.save(tf.Module(), str(tmp_path / "other"))
  with pytest.raises(UserInputError, match="not an export of this project"):
    predict.load(str(tmp_path / "other"))


def test_predict_command_on_arguments_and_standard_input(exported):
  """One line per review, from arguments or stdin, as text or JSON lines."""
  lines = run_in_fresh_process(["-m", "trainer.predict", f"--model={os.path.dirname(exported)}",
                                "A wonderful film.", "Dull and long."]).splitlines()
  assert len(lines) == 2
  probability, sentiment, excerpt = lines[0].split("\t")
  assert 0 <= float(probability) <= 1 and sentiment in ("positive", "negative")
  assert excerpt == "A wonderful film."
  stdin = "\n\t \ngreat film\nawful\n"  # An empty and a blank line too.
  records_out = [json.loads(line) for line in run_in_fresh_process(
      ["-m", "trainer.predict", f"--model={exported}", "--format=json"], stdin).splitlines()]
  assert [record["index"] for record in records_out] == [0, 1, 2, 3]
  assert {record["label"] for record in records_out} <= {0, 1}
  assert [record["token_count"] for record in records_out][:2] == [0, 0]
  assert records_out[0]["warning"].startswith("empty review") and not records_out[2]["warning"]
  flagged = run_in_fresh_process(["-m", "trainer.predict", f"--model={exported}",
                                  "日本語の映画です"]).rstrip("\n").split("\t")
  assert flagged[3].startswith("WARNING: unknown words: 100% of its 1 tokens")


def test_vertex_outputs_and_tuning_metric(tmp_path, monkeypatch, learnable_dir):
  """With Vertex's variables set, outputs go where Vertex expects; a trial reports its metric."""
  base = tmp_path / "vertex" / "7"
  for name, folder in (("AIP_MODEL_DIR", "model"), ("AIP_CHECKPOINT_DIR", "checkpoints"),
                       ("AIP_TENSORBOARD_LOG_DIR", "logs")):
    monkeypatch.setenv(name, str(base / folder))
  monkeypatch.setenv("CLOUD_ML_TRIAL_ID", "7")
  monkeypatch.setenv("CLOUD_ML_HP_METRIC_FILE", str(tmp_path / "hypertune" / "output.metrics"))
  config = config_lib.override(CONFIG, max_length=40, global_batch_size=8, epochs=0.2,
                               eval_batch_size=32, data_dir=learnable_dir)
  results = train_lib.train_and_evaluate(config, str(base))
  assert results["export"] == str(base / "model")
  assert export.load_metadata(results["export"])["test"] == results["test"]
  assert tf.train.latest_checkpoint(str(base / "checkpoints"))
  assert os.listdir(base / "logs")
  reported = json.loads((tmp_path / "hypertune" / "output.metrics").read_text().splitlines()[-1])
  assert float(reported["accuracy"]) == pytest.approx(results["validation"]["accuracy"])
  assert reported["trial"] == "7"
