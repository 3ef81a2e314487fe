"""Predictions -> metrics, all from scikit-learn."""
from __future__ import annotations

import numpy as np
from sklearn.metrics import (
    accuracy_score,
    confusion_matrix,
    log_loss,
    precision_recall_fscore_support,
)


def classification_metrics(y_true: np.ndarray, probs: np.ndarray, classes: list[str]) -> dict:
    labels = list(range(len(classes)))
    y_pred = probs.argmax(1)
    metrics = {"accuracy": float(accuracy_score(y_true, y_pred)),
               "loss": float(log_loss(y_true, np.clip(probs, 1e-12, 1.0), labels=labels)),
               "n_test": int(len(y_true))}
    # Averaged over the classes the test split holds or the model predicted (scikit-learn's own default): a class
    # with no test image and never predicted has no precision or recall to average, not a 0.
    present = np.union1d(y_true, y_pred).tolist()
    for average in ("macro", "weighted"):
        p, r, f, _ = precision_recall_fscore_support(y_true, y_pred, labels=present, average=average, zero_division=0)
        metrics.update({f"{average}_precision": float(p), f"{average}_recall": float(r), f"{average}_f1": float(f)})
    p, r, f, s = precision_recall_fscore_support(y_true, y_pred, labels=labels, zero_division=0)
    metrics["per_class"] = {
        name: {"precision": float(p[i]), "recall": float(r[i]), "f1": float(f[i]), "support": int(s[i])}
        for i, name in enumerate(classes)
    }
    metrics["confusion_matrix"] = confusion_matrix(y_true, y_pred, labels=labels).tolist()
    return metrics
