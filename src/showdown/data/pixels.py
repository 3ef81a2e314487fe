"""Photos handed to a frozen pass as 8-bit pixels, normalised inside its graph.

The eval transform ends in ToTensor and Normalize: a float32 copy of each image (4x the bytes of its pixels),
built one image at a time in the loader's workers and passed to the main process through shared memory. Of the
1.3 CPU-seconds a worker spends on 750 TF-Flowers photos for MobileNetV2, those two steps took 0.5 (decode 0.4,
resize and crop 0.45; Zen 4, one core). A frozen pass instead gets the pixels (uint8, 3 x H x W) after the
transform's resize and crop, and `Normalized`, the first module of its frozen graph, turns a whole batch into the
same floats (up to float rounding: (x - 255 mean) / (255 std) instead of (x / 255 - mean) / std), in the engine,
on the whole batch at once. The frozen pass took 15 % less time for it (docs/performance.md, ninth pass).
"""
from __future__ import annotations

import numpy as np
import torch
from PIL import Image
from torch import nn
from torchvision import transforms

from showdown.data.images import PhotoTransform, eval_transform
from showdown.data.preprocessing import Preprocessing


class Normalized(nn.Module):
    """uint8 pixels (N, 3, H, W) -> what ToTensor then Normalize give each image."""

    def __init__(self, mean, std):
        super().__init__()
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32).view(1, 3, 1, 1) * 255)
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32).view(1, 3, 1, 1) * 255)

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        return (pixels.float() - self.mean) / self.std


class Pixels:
    """An RGB image as a uint8 (3, H, W) tensor. A class, not a closure: DataLoader workers started by `spawn`
    (macOS, Windows) receive it pickled."""

    def __call__(self, image: Image.Image) -> torch.Tensor:
        return torch.from_numpy(np.array(image, dtype=np.uint8)).permute(2, 0, 1)


def split_eval_transform(preprocessing: Preprocessing) -> tuple[list, Normalized] | None:
    """The eval transform as (its steps on the image, the Normalized module that replaces its last two), or None
    when it does not end in ToTensor then Normalize."""
    return _split(eval_transform(preprocessing).transforms)


def pixels_path(preprocessing: Preprocessing) -> tuple[PhotoTransform, Normalized] | None:
    """(the workers' transform: resize and crop to uint8 pixels, the module that normalises them in the graph), or
    None where the eval transform has other steps: those images take the float path."""
    evaluation = eval_transform(preprocessing)
    split = _split(evaluation.transforms)
    if split is None:
        return None
    geometric, normalized = split
    return PhotoTransform([*geometric, Pixels()], evaluation.decode_side), normalized


def _split(steps: list) -> tuple[list, Normalized] | None:
    *geometric, to_tensor, normalize = steps
    if type(to_tensor).__name__ not in ("ToTensor", "MaybeToTensor") or not isinstance(normalize, transforms.Normalize):
        return None
    return geometric, Normalized(list(map(float, normalize.mean)), list(map(float, normalize.std)))
