"""Decode images the same way everywhere, and batch them while skipping the ones that cannot be read."""
from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageOps
from timm.data import create_transform
from torch.utils.data import DataLoader, Dataset
from torchvision import transforms

from showdown.data.preprocessing import Preprocessing

# What decoding a broken, truncated, non-image or oversized file raises: such files are skipped and listed.
UNREADABLE = (OSError, ValueError, SyntaxError, Image.DecompressionBombError)

# A decompression bomb is refused by Pillow's own pixel limit; a decoding warning must not spam the log.
warnings.filterwarnings("ignore", category=UserWarning, module="PIL")


def load_rgb(path: Path) -> Image.Image:
    """An RGB image as the camera meant it: EXIF rotation applied, 16-bit, CMYK, palette and alpha converted."""
    with Image.open(path) as image:
        image = ImageOps.exif_transpose(image)
        if image.mode in ("I;16", "I;16B", "I;16L", "I"):
            # 16-bit grayscale: scale to 8 bits instead of letting convert() clip at 255.
            array = np.asarray(image, dtype=np.float32)
            peak = 65535.0 if array.max() > 255 else 255.0
            image = Image.fromarray((array * (255.0 / peak)).round().astype(np.uint8), mode="L")
        if image.mode in ("RGBA", "LA", "PA") or (image.mode == "P" and "transparency" in image.info):
            background = Image.new("RGBA", image.size, (255, 255, 255, 255))
            image = Image.alpha_composite(background, image.convert("RGBA"))
        return image.convert("RGB")


def eval_transform(preprocessing: Preprocessing):
    """Resize, centre crop and normalise exactly as the backbone's weights expect."""
    return create_transform(**preprocessing.to_dict())


def train_transform(preprocessing: Preprocessing, augment: str):
    """`none` is the eval transform; `flip` mirrors half the images; `light` flips and random-resized-crops;
    `strong` adds RandAugment."""
    if augment == "none":
        return eval_transform(preprocessing)
    if augment == "flip":
        return transforms.Compose([transforms.RandomHorizontalFlip(), eval_transform(preprocessing)])
    return create_transform(
        input_size=preprocessing.input_size, is_training=True, interpolation=preprocessing.interpolation,
        mean=preprocessing.mean, std=preprocessing.std, hflip=0.5, color_jitter=None,
        auto_augment="rand-m9-mstd0.5-inc1" if augment == "strong" else None,
    )


class ImageFiles(Dataset):
    """(image tensor, label, index) per file; an unreadable file yields None instead of raising."""

    def __init__(self, items: list[tuple[Path, int]], transform):
        self.items = items
        self.transform = transform

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, index: int):
        path, label = self.items[index]
        try:
            return self.transform(load_rgb(path)), label, index
        except UNREADABLE:
            return None, label, index


def collate_readable(batch):
    """Stack the readable images; report the indices of the ones that were not."""
    good = [b for b in batch if b[0] is not None]
    failed = [b[2] for b in batch if b[0] is None]
    if not good:
        return torch.empty(0), torch.empty(0, dtype=torch.long), torch.empty(0, dtype=torch.long), failed
    images = torch.stack([b[0] for b in good])
    labels = torch.tensor([b[1] for b in good])
    indices = torch.tensor([b[2] for b in good])
    return images, labels, indices, failed


def image_loader(items, transform, *, batch_size: int, workers: int, shuffle: bool = False):
    """Shuffled from the global RNG, which the training loop seeds at every epoch."""
    return DataLoader(
        ImageFiles(items, transform), batch_size=batch_size, shuffle=shuffle, num_workers=workers,
        collate_fn=collate_readable, persistent_workers=False,
    )
