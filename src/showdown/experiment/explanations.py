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
    classes, paths = entry.dataset.classes, [str(test_items[i][0]) for i in picked]
    # The map of the class the run predicted, and the run's own prediction and confidence beside it (this pass is
    # fp32 in PyTorch: a near tie the run's bf16 or OpenVINO tipped could go the other way here)
    done = explain(entry.model, classes, entry.backbone.preprocessing, paths, entry.folder / GRADCAM_DIR,
                   targets=[int(predicted[i]) for i in picked])
    index = dict(zip(paths, picked))  # an image that no longer decodes is left out of `done`
    write_csv(entry.folder / GRADCAM_DIR / GRADCAM_INDEX, [
        {"path": d.path, "png": d.png, "kind": "wrong" if predicted[i] != y_true[i] else "right",
         "true": classes[y_true[i]], "pred": classes[predicted[i]], "confidence": round(float(confidence[i]), 4)}
        for d in done for i in [index[d.path]]])
