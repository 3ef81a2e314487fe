"""Where each entry looked: Grad-CAM overlays of its most confidently wrong test images and a few it got right,
in `<entry>/gradcam/` with an index the report reads (reporting/report_images.py)."""
from __future__ import annotations

import numpy as np

from showdown.deploy.explain import explain
from showdown.experiment.context import Entry
from showdown.fileio import write_csv
from showdown.reporting.report_images import GRADCAM_DIR, GRADCAM_INDEX


def explain_entry(entry: Entry, probs: np.ndarray, y_true: np.ndarray, test_items: list, count: int) -> None:
    """`count` overlays: two thirds the most confidently wrong test images, the rest the most confidently right."""
    if not count or not len(probs):
        return
    predicted, confidence = probs.argmax(1), probs.max(1)
    by_confidence = np.argsort(-confidence, kind="stable")
    wrong = [i for i in by_confidence if predicted[i] != y_true[i]]
    right = [i for i in by_confidence if predicted[i] == y_true[i]]
    picked = wrong[:count - count // 3]
    picked += right[:count - len(picked)]
    kinds = ["wrong" if predicted[i] != y_true[i] else "right" for i in picked]
    classes = entry.dataset.classes
    done = explain(entry.model, classes, entry.backbone.preprocessing, [str(test_items[i][0]) for i in picked],
                   entry.folder / GRADCAM_DIR)
    write_csv(entry.folder / GRADCAM_DIR / GRADCAM_INDEX, [
        {"path": d.path, "png": d.png, "kind": kind, "true": classes[y_true[i]], "pred": d.label,
         "confidence": round(d.probability, 4)}
        for d, kind, i in zip(done, kinds, picked)])
