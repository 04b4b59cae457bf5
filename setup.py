"""Package of the IMDB BiLSTM training job: `pip install -e .[test]`."""

import setuptools

setuptools.setup(
    name="imdb-bilstm-trainer",
    version="0.1.0",
    description="Distributed BiLSTM sentiment classifier for IMDB reviews (TensorFlow).",
    packages=["trainer"],
    python_requires=">=3.10,<3.13",
    install_requires=[
        "tensorflow==2.21.0",
        "keras==3.15.1",
        "tensorboard==2.21.0",  # tf.summary needs it; tensorflow no longer depends on it.
        "tensorflow-datasets==4.9.10",
        "importlib_resources==7.1.0",  # tensorflow-datasets imports it without declaring it.
        "numpy==2.4.6",
        "absl-py==2.5.1",
        "google-cloud-storage==3.17.1",
    ],
    extras_require={
        "test": ["pytest==9.2.0"],
    },
)
