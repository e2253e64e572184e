"""Clean-task metrics of a classifier, computed with scikit-learn from predicted probabilities.

Accuracy, macro F1, Cohen's kappa, macro one-vs-rest ROC-AUC, per-class accuracy (recall of each
class) and the mean cross-entropy loss, as reported in seed 000 §2.1.3.
"""

from __future__ import annotations

import math

import numpy as np


def classification_metrics(labels: np.ndarray, probabilities: np.ndarray) -> dict[str, float]:
    """Metrics of predictions ``probabilities`` ``(N, C)`` against true ``labels`` ``(N,)``.

    Returns ``accuracy``, ``macro_f1``, ``kappa``, ``roc_auc`` (macro one-vs-rest; NaN when the
    labels hold fewer than two classes), ``loss`` (mean cross-entropy) and ``class_<c>_accuracy``
    for every class ``c`` (NaN for a class absent from ``labels``).
    """
    from sklearn.metrics import accuracy_score, f1_score, log_loss, recall_score  # ~1 s: not on the ClientApp's path

    labels = np.asarray(labels, dtype=np.int64)
    probabilities = np.asarray(probabilities, dtype=np.float64)
    num_classes = probabilities.shape[1]
    classes = np.arange(num_classes)
    predictions = probabilities.argmax(axis=1)
    present = np.unique(labels)
    metrics = {
        "accuracy": float(accuracy_score(labels, predictions)),
        "macro_f1": float(f1_score(labels, predictions, labels=present, average="macro", zero_division=0)),
        "kappa": _kappa(labels, predictions),
        "roc_auc": _roc_auc(labels, probabilities, present),
        "loss": float(log_loss(labels, np.clip(probabilities, 1e-12, 1.0), labels=classes)),
    }
    recalls = recall_score(labels, predictions, labels=classes, average=None, zero_division=0)
    for cls in classes:
        metrics[f"class_{cls}_accuracy"] = float(recalls[cls]) if cls in present else math.nan
    return metrics


def _kappa(labels: np.ndarray, predictions: np.ndarray) -> float:
    from sklearn.metrics import cohen_kappa_score

    value = cohen_kappa_score(labels, predictions)
    return float(value) if np.isfinite(value) else math.nan


def _roc_auc(labels: np.ndarray, probabilities: np.ndarray, present: np.ndarray) -> float:
    """Macro one-vs-rest AUC over the classes present in ``labels``."""
    from sklearn.metrics import roc_auc_score

    if len(present) < 2:
        return math.nan
    if len(present) == probabilities.shape[1] > 2:  # binary: roc_auc_score wants 1-D scores
        return float(roc_auc_score(labels, probabilities, multi_class="ovr", average="macro"))
    per_class = [roc_auc_score(labels == cls, probabilities[:, cls]) for cls in present]
    return float(np.mean(per_class))
