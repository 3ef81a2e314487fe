"""Batched resizing for small images (CIFAR's 32 px): the same pixels as the per-image transform, far cheaper.

Upscaling a 32 px image to 224 px one image at a time in Pillow costs more CPU than decoding it. For a set of
small square images of one size, the workers only decode, and resize + centre crop + normalise run on the
whole batch inside the frozen graph, as two small matrix products per image. The matrices are read off the
eval transform itself (Pillow's filter pushed through its Resize and CenterCrop), so the result equals the
per-image path up to Pillow's 8-bit rounding (a test checks it).
"""
from __future__ import annotations

from functools import lru_cache
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch import nn
from torchvision import transforms

from showdown.data.images import UNREADABLE
from showdown.data.pixels import Normalized, Pixels, split_eval_transform
from showdown.data.preprocessing import Preprocessing

SMALL_SIDE = 64  # square images up to this side take the batched path


def small_square_side(items: list[tuple[Path, int]], input_size) -> int | None:
    """The common side of the images when every readable one is a small square smaller than the input, else None."""
    side = _common_square_side(tuple(path for path, _ in items))
    return side if side and side <= min(SMALL_SIDE, *input_size[1:]) else None


@lru_cache(maxsize=32)
def _common_square_side(paths: tuple[Path, ...]) -> int | None:
    """Remembered per file list: one run asks for each split several times (features, mirror, boundary)."""
    sizes = set()
    for path in paths:
        try:
            with Image.open(path) as image:  # reads the header only
                sizes.add(image.size)
        except UNREADABLE:
            continue  # unreadable files are skipped later, as on the per-image path
        if len(sizes) > 1:
            return None
    if len(sizes) != 1:
        return None
    (width, height), = sizes
    return width if width == height else None


def without_centre_crop(preprocessing: Preprocessing, items: list[tuple[Path, int]]) -> Preprocessing | None:
    """The preprocessing minus its centre crop when the images are small squares, else None.

    The crop trims the margins of photos larger than the input; upscaled 32 px thumbnails have none to spare
    (whole-image upscaling scored 2 points more on a CIFAR-10 subset, docs/performance.md)."""
    if preprocessing.crop_pct >= 1.0 or not small_square_side(items, preprocessing.input_size):
        return None
    return preprocessing.whole_image()


def _axis_weights(geometric: list, side: int, axis: int) -> np.ndarray:
    """(output pixels, input pixels) weights along one axis: unit impulses through the geometric transforms."""
    columns = []
    for i in range(side):
        impulse = np.zeros((side, side), dtype=np.float32)
        if axis == 0:
            impulse[i, :] = 1.0  # a bright row: the output's first column is that row's vertical response
        else:
            impulse[:, i] = 1.0
        image = Image.fromarray(impulse, mode="F")
        for step in geometric:
            image = step(image)
        out = np.asarray(image, dtype=np.float32)
        columns.append(out[:, 0] if axis == 0 else out[0, :])
    return np.stack(columns, axis=1)


class BatchResize(nn.Module):
    """uint8 (N, 3, s, s) -> the normalised (N, 3, H, W) batch the per-image eval transform would give."""

    def __init__(self, rows: np.ndarray, cols: np.ndarray, normalized: Normalized):
        super().__init__()
        self.register_buffer("rows", torch.from_numpy(rows))
        self.register_buffer("cols_t", torch.from_numpy(cols.T.copy()))
        self.normalized = normalized

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        x = images.float()
        # Pillow resizes horizontally, then vertically, rounding to 8 bits after each pass.
        x = torch.matmul(x, self.cols_t).clamp(0, 255).round()
        x = torch.matmul(self.rows, x).clamp(0, 255).round()
        return self.normalized(x)


def batch_resize(preprocessing: Preprocessing, side: int) -> BatchResize | None:
    """The batched equivalent of eval_transform(preprocessing) for side x side images, or None when that
    transform has steps other than Resize, CenterCrop, ToTensor and Normalize."""
    split = split_eval_transform(preprocessing)
    if split is None or not all(isinstance(s, (transforms.Resize, transforms.CenterCrop)) for s in split[0]):
        return None
    geometric, normalized = split
    return BatchResize(_axis_weights(geometric, side, 0), _axis_weights(geometric, side, 1), normalized)


class Uint8Tensor(Pixels):
    """The worker side of the batched path: decode only (a stray size is resized by Pillow to keep batches even)."""

    def __init__(self, side: int):
        self.side = side

    def __call__(self, image: Image.Image) -> torch.Tensor:
        if image.size != (self.side, self.side):
            image = image.resize((self.side, self.side), Image.BICUBIC)
        return super().__call__(image)
