"""Export a trained model to TFLite (LiteRT) with litert-torch: float32, or int8 (post-training, calibrated).

The file takes NHWC images (the layout phone camera pipelines hand over) already normalised by the
model's preprocessing, and outputs class probabilities. int8 converts to float32 first and quantises that
file (tflite_int8.py: full integer, per-channel weights, activations calibrated on training images of the
run), because litert-torch's own PT2E quantizer gives ReLU6 the range of the unclamped conv output and
leaves residual adds and the softmax in float (88.5 % top-1 agreement with PyTorch instead of 98 %).
Class names and preprocessing travel inside the file as a TFLite metadata entry (JSON).
"""
from __future__ import annotations

import csv
import logging
import os
import random
import warnings
from pathlib import Path

import torch
from torch import nn

from showdown.data.images import UNREADABLE, decode_for, eval_transform
from showdown.data.preprocessing import Preprocessing
from showdown.deploy.litert_quiet import converter_quiet
from showdown.deploy.trained import add_tflite_metadata
from showdown.errors import ConfigError, ModelError
from showdown.run_schema import SPLITS_CSV, ModelInfo

CALIBRATION_IMAGES = 64  # training images that set the int8 activation ranges

log = logging.getLogger(__name__)


def export_tflite(model: nn.Module, info: ModelInfo, entry: Path, path: Path, metadata: str,
                  quantize: str | None) -> None:
    os.environ.setdefault("LITERT_TORCH_SHOW_PROGRESS", "n")  # its progress lines would bury the CLI's output
    try:
        with converter_quiet(), warnings.catch_warnings():
            warnings.simplefilter("ignore", SyntaxWarning)  # torchao's invalid escapes, shown while its .pyc is built
            import ai_edge_quantizer  # noqa: F401  (int8; comes with the same extra)
            import litert_torch
    except ImportError as exc:
        raise ConfigError("TFLite export needs litert-torch: pip install 'tl-showdown[tflite]'") from exc
    side = info.preprocessing["input_size"][1:]
    nhwc = litert_torch.to_channel_last_io(model.eval(), args=[0]).eval()
    sample = (torch.zeros(1, *side, 3),)
    images = calibration_images(entry, info) if quantize else []  # a missing splits.csv fails before converting
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")  # torch.export and the converter warn about internals
        litert_torch.convert(nhwc, sample).export(str(path))
        if quantize:
            from showdown.deploy.tflite_int8 import quantize_int8

            quantize_int8(path, [image.permute(1, 2, 0)[None].numpy() for image in images])  # NHWC, batch 1
    add_tflite_metadata(path, metadata)


def calibration_images(entry: Path, info: ModelInfo, count: int = CALIBRATION_IMAGES) -> list[torch.Tensor]:
    """Up to `count` of the run's images (from its splits.csv), preprocessed as in training: training images in a
    seeded order, then validation ones where training has too few (never test images); a file gone or unreadable
    is passed over. Fewer than `count` is one warning: the activation ranges of a few images may clip others."""
    splits = entry.parent / SPLITS_CSV
    if not splits.is_file():
        raise ModelError(f"int8 calibration uses the run's training images, listed in {splits}, which is missing; "
                         "export from inside its run folder")
    with splits.open(newline="") as f:
        rows = list(csv.DictReader(f))
    listed = {split: [Path(row["path"]) for row in rows if row["split"] == split] for split in ("train", "val")}
    transform = eval_transform(Preprocessing.from_dict(info.preprocessing))
    images = []
    for paths in listed.values():
        for path in _seeded_order(paths, count):
            if len(images) == count:
                return images
            try:
                images.append(transform(decode_for(transform, path)))
            except UNREADABLE:  # gone since the run, or one the run skipped too
                continue
    if not images:
        raise ModelError(f"none of the {len(listed['train'])} training images in {splits} can be read any more; "
                         "int8 calibration needs them")
    if len(images) < count:
        log.warning("int8 calibrated on %d image(s), the run's training and validation images, fewer than %d: "
                    "activations above their ranges are clipped; compare its predictions with the run's",
                    len(images), count)
    return images


def _seeded_order(paths: list[Path], first: int) -> list[Path]:
    """Every path once: a seeded sample of `first` of them (the same as ever where all can be read), then the rest."""
    picked = random.Random(0).sample(paths, min(first, len(paths)))
    chosen = set(picked)
    return picked + [path for path in paths if path not in chosen]
