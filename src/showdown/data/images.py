"""Decode images the same way everywhere, and batch them while skipping the ones that cannot be read.

Large JPEGs are decoded at the size they are used: a 12-megapixel phone photo resized to 256 px costs ~3x less
to decode at 1/4 scale inside the codec (Pillow's draft mode) than at full size, and the preprocessed tensor
stays within a fraction of one 8-bit level of the full decode (tests/data/test_draft_decode.py). Each transform
says how large its input must stay (`PhotoTransform.decode_side`); `load_rgb` picks the smallest 1/2, 1/4 or
1/8 scale whose shorter side is still at least that.
"""
from __future__ import annotations

import contextlib
import logging
import math
import multiprocessing
import os
import sys
import threading
import warnings
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageOps
from PIL.JpegImagePlugin import JpegImageFile
from timm.data import create_transform
from timm.data.auto_augment import posterize
from torch.utils.data import DataLoader, Dataset
from torchvision import transforms

from showdown import distributed
from showdown.config.cores import usable_cores
from showdown.data import formats  # noqa: F401  (registers the HEIC/HEIF and AVIF openers in every worker)
from showdown.data.preprocessing import Preprocessing
from showdown.errors import one_line

log = logging.getLogger(__name__)

# What decoding a broken, truncated, non-image or oversized file raises: such files are skipped and listed.
UNREADABLE = (OSError, ValueError, SyntaxError, Image.DecompressionBombError)


def quiet_decoding() -> None:
    """The warnings decoding a folder of photos would spam, off. Set for the whole process when this module is
    imported (a command's, a loader worker's); the Python API imports it with the process's filters kept
    (showdown/__init__.py) and sets them for the span of a call (experiment/kept_state.py)."""
    # A decompression bomb is refused by Pillow's own pixel limit; a decoding warning must not spam the log, nor
    # Pillow's warning for an image under twice that limit (a 100-megapixel photo, which decodes).
    warnings.filterwarnings("ignore", category=UserWarning, module="PIL")
    warnings.filterwarnings("ignore", category=Image.DecompressionBombWarning)
    # PyTorch's several-line note on more workers than cores, at every pass: said once, in one line (image_loader).
    warnings.filterwarnings("ignore", message="This DataLoader will create", category=UserWarning)
    # Python 3.12+ on a fork of a process with threads (torch's, OpenVINO's): the loader's workers fork on purpose
    # (fast start, the parent's imports shared) and start no thread before they run (_worker_start)
    warnings.filterwarnings("ignore", message=r"This process \(pid=\d+\) is multi-threaded, use of fork\(\)",
                            category=DeprecationWarning)


@contextlib.contextmanager
def decoding_quietly():
    """quiet_decoding for a call's span only (the Python API's): the process's own filters as they were after."""
    with warnings.catch_warnings():
        quiet_decoding()
        yield


quiet_decoding()
_WORKERS_NOTED: set[int] = set()


# How images are decoded, part of the feature cache key: features cached under another decoder are not reused.
DECODER = "draft-v1"
# Set (to anything but "" or "0") to decode every JPEG at full size; for benchmarks and tests.
FULL_DECODE_ENV = "SHOWDOWN_FULL_DECODE"
# The eval transform resizes the shorter side to input_size / crop_pct; a JPEG is decoded to at least twice
# that. On 12-megapixel photos resized to 256 px (decoded at 1/4 scale) the tensor differs from the full
# decode by 0.15-0.45 levels of 255 on average, 2-4 at most; at 1x (1/8 scale) by 0.35-0.7, 3-6 at most, and
# hardly faster: entropy decoding, the same at every scale, dominates (~55 ms per photo at 1/4 or 1/8 on a
# 4 MB file, against ~170 ms for the full decode plus ~60 ms to resize its 12 megapixels).
EVAL_MARGIN = 2
# Random-resized-crop's range (timm's defaults, passed to it explicitly so the decode rule below matches).
CROP_SCALE = (0.08, 1.0)
CROP_RATIO = (3 / 4, 4 / 3)


def full_decode() -> bool:
    return os.environ.get(FULL_DECODE_ENV, "") not in ("", "0")


def decoder() -> str:
    """The decoder in use, for cache keys."""
    return "full" if full_decode() else DECODER


# Pillow refuses an image of over 179 megapixels (twice its MAX_IMAGE_PIXELS) as a possible decompression bomb.
# A JPEG decoded in draft mode costs 1/64 of that at 1/8 scale, so a 200-megapixel phone photo (16,320 x 12,240)
# is read like a 3-megapixel one: such a JPEG may have up to this many pixels. Other formats keep Pillow's limit.
DRAFT_JPEG_MAX_PIXELS = 2_000_000_000
_PIXEL_LIMIT = threading.Lock()  # Pillow's limit is one global: raised and restored by one thread at a time


def _open(path: Path, draft: bool) -> Image.Image:
    try:
        return Image.open(path)
    except Image.DecompressionBombError as refused:
        if not draft:
            raise
        bomb = refused
    with _PIXEL_LIMIT:
        limit, Image.MAX_IMAGE_PIXELS = Image.MAX_IMAGE_PIXELS, DRAFT_JPEG_MAX_PIXELS // 2
        try:
            return Image.open(path, formats=["JPEG"])
        except Image.UnidentifiedImageError:
            raise bomb from None  # not a JPEG: Pillow's own limit holds
        finally:
            Image.MAX_IMAGE_PIXELS = limit


def load_rgb(path: Path, min_side: int | None = None) -> Image.Image:
    """An RGB image as the camera meant it: EXIF rotation applied, 16-bit, CMYK, palette and alpha converted.

    With `min_side`, a JPEG at least twice that on its shorter side is decoded at the smallest 1/2, 1/4 or 1/8
    scale that keeps its shorter side at least `min_side` (the codec's draft mode); other files and smaller
    JPEGs are decoded in full. The shorter side does not change with the EXIF rotation applied after it."""
    with _open(path, draft=bool(min_side)) as image:
        if min_side and isinstance(image, JpegImageFile) and min(image.size) >= 2 * min_side:
            image.draft("RGB", (min_side, min_side))  # scale = the largest power of 2 keeping both sides >= it
        kind = image.format  # the transposed copy has none
        image = ImageOps.exif_transpose(image)
        if image.mode in ("I;16", "I;16B", "I;16L", "I"):
            # 16-bit grayscale: scaled to 8 bits, not clipped at 255 by convert(); a dark one stays dark. Pillow
            # gives a 16-bit PGM as 32-bit integers on 16 bits' scale; other 32-bit integers state no range: 8 or
            # 16 bits by the largest value, else that value.
            array = np.asarray(image, dtype=np.float32)
            top = float(array.max()) if image.mode == "I" and kind != "PPM" else 65535.0
            peak = 255.0 if top <= 255 else 65535.0 if top <= 65535 else top
            image = Image.fromarray(np.clip(array * (255.0 / peak), 0, 255).round().astype(np.uint8), mode="L")
        if image.mode in ("RGBA", "LA", "PA") or (image.mode == "P" and "transparency" in image.info):
            background = Image.new("RGBA", image.size, (255, 255, 255, 255))
            image = Image.alpha_composite(background, image.convert("RGBA"))
        return image.convert("RGB")


def decode_for(transform, path: Path) -> Image.Image:
    """`path` decoded at the size `transform` needs (its `decode_side`), as every batch of a run decodes it."""
    return load_rgb(path, None if full_decode() else getattr(transform, "decode_side", None))


def why_unreadable(path: Path) -> str:
    """Why `path` does not decode, in one line, for the lists of skipped files: it is decoded once more (the
    workers that skipped it kept only that it failed)."""
    try:
        load_rgb(path, min_side=1)
    except FileNotFoundError:
        return "gone"
    except Image.UnidentifiedImageError:
        return "empty file" if path.stat().st_size == 0 else "not an image this installation decodes"
    except UNREADABLE as exc:
        return one_line(exc)
    return "decodes now (changed since it was read)"


class PhotoTransform(transforms.Compose):
    """Transform steps, and the shorter side a decoded image must keep for them (`decode_side`, None: any)."""

    def __init__(self, steps: list, decode_side: int | None):
        super().__init__(steps)
        self.decode_side = decode_side


def eval_transform(preprocessing: Preprocessing) -> PhotoTransform:
    """Resize, centre crop and normalise exactly as the backbone's weights expect."""
    resized = max(math.floor(side / preprocessing.crop_pct) for side in preprocessing.input_size[1:])
    return PhotoTransform(create_transform(**preprocessing.to_dict()).transforms, EVAL_MARGIN * resized)


def train_transform(preprocessing: Preprocessing, augment: str) -> PhotoTransform:
    """`none` is the eval transform; `flip` mirrors half the images; `light` flips and random-resized-crops;
    `strong` adds RandAugment.

    A random-resized crop can be as small as 8% of the area at aspect 3/4: its shorter side is then
    sqrt(0.08 * 3/4) = 0.245 of a square image's side. The image is decoded large enough (4.1x the input,
    915 px for 224) that even that crop is not upscaled, so no crop is blurrier than from the full decode;
    12-megapixel photos then decode at 1/2 scale, and the smallest crops are 0.5-0.6 levels from the full
    decode's same crops on average (at 1/4 scale they would be upscaled, and ~1 level away)."""
    if augment == "none":
        return eval_transform(preprocessing)
    if augment == "flip":
        evaluation = eval_transform(preprocessing)
        return PhotoTransform([transforms.RandomHorizontalFlip(), *evaluation.transforms], evaluation.decode_side)
    steps = create_transform(
        input_size=preprocessing.input_size, is_training=True, interpolation=preprocessing.interpolation,
        mean=preprocessing.mean, std=preprocessing.std, hflip=0.5, color_jitter=None, scale=CROP_SCALE,
        ratio=CROP_RATIO, auto_augment="rand-m9-mstd0.5-inc1" if augment == "strong" else None,
    ).transforms
    for step in steps:
        _keep_one_bit(step)
    smallest = math.sqrt(CROP_SCALE[0] * min(CROP_RATIO[0], 1 / CROP_RATIO[1]))
    return PhotoTransform(steps, math.ceil(max(preprocessing.input_size[1:]) / smallest))


def _posterize_keeping_one_bit(image, bits_to_keep, **kwargs):
    return posterize(image, max(1, bits_to_keep), **kwargs)


def _keep_one_bit(step) -> None:
    """RandAugment's increasing posterize keeps 0 bits when the noisy magnitude reaches its cap of 10 (about 2%
    of its draws at m9, mstd0.5): older Pillow made the image black, recent Pillow (13 here) raises ValueError.
    Keep 1 bit, the nearest Pillow allows, so the image trains rather than fails."""
    for op in getattr(step, "ops", ()):
        if getattr(op, "aug_fn", None) is posterize:
            op.aug_fn = _posterize_keeping_one_bit


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
            image = decode_for(self.transform, path)
        except UNREADABLE:
            return None, label, index
        return self.transform(image), label, index  # a transform's own error is a bug: it raises


def _stacked(tensors: list[torch.Tensor]) -> torch.Tensor:
    """torch.stack; in a loader's worker, into shared memory allocated here, as torch's default_collate does. Where
    /dev/shm (or a file size limit) refuses it, that is then this batch's error, which the loader raises in the
    main process; the worker's sending thread, where it came up otherwise, left the main process waiting forever."""
    out = None
    if torch.utils.data.get_worker_info() is not None:
        storage = tensors[0]._typed_storage()._new_shared(sum(t.numel() for t in tensors), device=tensors[0].device)
        out = tensors[0].new(storage).resize_(len(tensors), *tensors[0].shape)
    return torch.stack(tensors, 0, out=out)


def collate_readable(batch):
    """Stack the readable images; report the indices of the ones that were not."""
    good = [b for b in batch if b[0] is not None]
    failed = [b[2] for b in batch if b[0] is None]
    if not good:
        return torch.empty(0), torch.empty(0, dtype=torch.long), torch.empty(0, dtype=torch.long), failed
    images = _stacked([b[0] for b in good])
    labels = torch.tensor([b[1] for b in good])
    indices = torch.tensor([b[2] for b in good])
    return images, labels, indices, failed


def image_loader(items, transform, *, batch_size: int, workers: int, sampler=None, generator=None,
                 pin_memory: bool = False, prefetch: int = 2):
    """Batches in item order, or in the order of `sampler` (the training loop's DistributedSampler); `generator`
    seeds the workers' random augmentations; pinned memory for fast copies to a CUDA GPU; each worker decodes
    up to `prefetch` batches ahead."""
    cores = usable_cores()
    if workers > cores and workers not in _WORKERS_NOTED:
        _WORKERS_NOTED.add(workers)
        log.warning("%d image-decoding workers on %d CPU cores: they take turns, which can make decoding slower",
                    workers, cores)
    return DataLoader(
        ImageFiles(items, transform), batch_size=batch_size, sampler=sampler, num_workers=workers,
        collate_fn=collate_readable, persistent_workers=False, pin_memory=pin_memory, generator=generator,
        prefetch_factor=prefetch if workers else None, multiprocessing_context=_worker_start(workers, pin_memory),
    )


def _worker_start(workers: int, pin_memory: bool):
    """How the loader's worker processes start. Forked (the default on Linux: instant, memory shared) from a process
    that runs no threads of its own but OpenBLAS's idle pool, which its own fork handlers make safe. Under torchrun
    (gloo's and DistributedDataParallel's threads), with pinned memory (the loader's pin-memory thread) or with JAX
    loaded (litert-torch imports it for a TFLite export, so a notebook that exported and then predicts has it) a
    fork can copy a lock another thread holds at that instant, and the worker waits on it forever
    (pytorch#130610): there the workers fork from a fork server, a clean process that has imported this module
    (and torch) once, so starting one stays cheap."""
    threaded = pin_memory or distributed.active() or "jax" in sys.modules
    if not workers or not threaded or multiprocessing.get_start_method() != "fork":
        return None
    context = multiprocessing.get_context("forkserver")
    context.set_forkserver_preload([__name__])
    return context
