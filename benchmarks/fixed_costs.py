"""The fixed costs of a run, each timed on its own in one fresh process: what a cached re-run pays besides training.

  imports      what `showdown run` imports before it reads the data (torch, timm, scikit-learn, matplotlib, ...)
  weights      the backbone with its weights: a TFLite MobileNetV2 imported into timm, or the cached import
  engine       the frozen MobileNetV2 exported to ONNX and compiled in OpenVINO (or ONNX Runtime), or both cached
  gradcam      the report's Grad-CAM overlays of 6 test photos (the default --gradcam 6)
  figures      a confusion matrix and training curves drawn to PNG

Each phase runs twice in the process, against the same cache folder: the first fills what a first run fills, the
second is what a re-run pays. Compare two checkouts by running this with each one's src on PYTHONPATH, taking
turns (the machine's load changes), and comparing medians:

    PYTHONPATH=src python benchmarks/fixed_costs.py --weights-dir ../shared/weights/mobilenet-tflite
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

CLASSES = ["daisy", "dandelion", "roses", "sunflowers", "tulips"]


def timed(fn):
    start = time.perf_counter()
    result = fn()
    return time.perf_counter() - start, result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--weights-dir", default="../shared/weights/mobilenet-tflite")
    parser.add_argument("--cache", help="cache folder (default: a new temporary one)")
    args = parser.parse_args()
    os.environ["SHOWDOWN_CACHE"] = args.cache or tempfile.mkdtemp(prefix="fixed-costs-")
    seconds: dict[str, float] = {}
    start = time.perf_counter()
    from showdown.startup import heavy_imports

    with heavy_imports():
        from showdown.experiment import runner  # noqa: F401  (what `showdown run` imports)
    seconds["imports"] = time.perf_counter() - start

    import torch

    from showdown.data.sources import demo_path
    from showdown.deploy.explain import explain
    from showdown.frozen import engines
    from showdown.models.backbones import load_backbone
    from showdown.models.classifier import Head, ImageClassifier
    from showdown.reporting import plots

    for run in ("first", "again"):
        seconds[f"weights ({run})"], backbone = timed(lambda: load_backbone("mobilenet_v2",
                                                                            weights_dir=args.weights_dir))
        example = torch.zeros(1, *backbone.preprocessing.input_size)
        seconds[f"engine ({run})"], _ = timed(lambda m=backbone.model, x=example: engines.frozen_forward(
            m, x, "fp32", "auto"))
    photos = [str(p) for p in sorted(Path(demo_path()).rglob("*.jpg"))[:6]]
    torch.manual_seed(0)
    model = ImageClassifier(backbone.model, Head(backbone.num_features, len(CLASSES)))
    with tempfile.TemporaryDirectory() as folder:
        seconds["gradcam"], _ = timed(lambda: explain(model, CLASSES, backbone.preprocessing, photos, Path(folder)))
    history = [{"phase": "head", "epoch": e, "lr": 1e-3, "train_loss": 1 / e, "train_acc": e / 31,
                "val_loss": 1.1 / e, "val_acc": e / 32, "seconds": 0.1} for e in range(1, 31)]
    matrix = [[20 if i == j else 1 for j in range(5)] for i in range(5)]
    seconds["figures"], _ = timed(lambda: (plots.confusion_png(matrix, CLASSES, "t"), plots.curves_png(history, "t")))
    print(json.dumps({"seconds": {k: round(v, 3) for k, v in seconds.items()}, "runtime": engines.resolve_runtime(
        "auto", "fp32"), "src": str(Path(sys.modules["showdown"].__file__).parent)}))


if __name__ == "__main__":
    main()
