"""The run folder: every number in the table can be traced to a file here."""
from __future__ import annotations

import os
import platform
from importlib.metadata import PackageNotFoundError, version

import torch


def environment(precision: str, runtime: str = "torch") -> dict:
    def pkg(name):
        try:
            return version(name)
        except PackageNotFoundError:
            return None

    return {
        "python": platform.python_version(), "platform": platform.platform(),
        "cpu": platform.processor() or platform.machine(),
        "cpu_count": os.cpu_count(), "torch_threads": torch.get_num_threads(), "cuda": torch.cuda.is_available(),
        "precision": precision, "runtime": runtime,
        "packages": {n: pkg(n) for n in ("tl-showdown", "torch", "torchvision", "timm", "scikit-learn", "numpy",
                                         "pillow", "onnxruntime")},
    }
