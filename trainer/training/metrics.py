"""Classification metrics computed on the host from gathered predictions."""

import keras
import numpy as np


def classification_metrics(probabilities, labels, losses):
  """Accuracy, loss, AUC, precision and recall of binary predictions.

  Args:
    probabilities: float[examples], predicted probability of the positive class.
    labels: int[examples], 0 or 1.
    losses: float[examples], per-example cross-entropy.

  Returns:
    Dict of floats, plus the number of examples.
  """
  labels = np.asarray(labels, np.float32)
  probabilities = np.asarray(probabilities, np.float32)
  results = {"examples": int(labels.size),
             "loss": round(float(np.mean(losses)), 6) if labels.size else 0.0}
  for name, metric in (("accuracy", keras.metrics.BinaryAccuracy()),
                       ("auc", keras.metrics.AUC(num_thresholds=1000)),
                       ("precision", keras.metrics.Precision()),
                       ("recall", keras.metrics.Recall())):
    metric.update_state(labels, probabilities)
    results[name] = round(float(metric.result()), 6)
  return results
