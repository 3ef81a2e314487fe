"""Pooled backbone features, computed once per image and kept on disk.

A frozen backbone gives the same features every epoch, so the head trains on cached tensors instead of
running the backbone again. The cache key covers everything that changes the features: backbone,
weights (a random init by the digest of its tensors: it changes with --seed; weights_key.py), preprocessing,
precision, and the exact files (paths, sizes, mtimes) and labels of the split.

Each file carries, in its safetensors header, a checksum of its tensors and metadata. An entry that is truncated,
emptied or altered (a full disk, an interrupted copy, a flipped bit) fails that check when it is read: it is
deleted and recomputed with one warning (cache.py). A write the disk refuses is a warning too: the run goes on
with the features in memory.
"""
from __future__ import annotations

import contextlib
import json
import logging
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save

from showdown import bars, distributed
from showdown.cache import Damaged, intact
from showdown.data.images import decoder, image_loader
from showdown.data.preprocessing import Preprocessing
from showdown.data.thumbnails import Uint8Tensor, batch_resize, small_square_side
from showdown.device import to_device
from showdown.errors import DataError, DiskError
from showdown.fileio import digest, file_stamp, write_bytes_atomic
from showdown.frozen import quantize
from showdown.frozen.engines import InputStage, frozen_forward, in_order, photo_inputs
from showdown.frozen.frozen_pass import FEATURE_BATCH, FrozenPass
from showdown.frozen.weights_key import weights_id
from showdown.models.backbones import Backbone
from showdown.precision import autocast

log = logging.getLogger(__name__)
__all__ = ["FEATURE_BATCH", "Features", "FrozenPass", "cache_key", "extract_features", "extract_views",
           "forward_frozen", "forward_views"]
# Batches each worker decodes ahead: enough to keep the other core busy while the engine is built (~0.7 s).
PREFETCH = 8


@dataclass
class Features:
    features: torch.Tensor  # (n, d) float32
    labels: torch.Tensor  # (n,)
    indices: torch.Tensor  # positions in the split's item list (unreadable files are missing)
    failed: list[str]  # files that could not be decoded
    cache_hit: bool
    on_disk: bool = False  # `features` is a memory-mapped file (the boundary cache on disk): read rows in order


def cache_key(backbone: Backbone, items: list[tuple[Path, int]], precision: str, runtime: str = "torch",
              mirror: bool = False, device_type: str = "cpu", calibration: str = "") -> str:
    """`calibration`: in int8, the calibration images' files_key (the features depend on them too)."""
    parts = {
        "backbone": backbone.spec.timm_name,
        "weights": backbone.source,
        "weights_id": weights_id(backbone),
        "timm_kwargs": backbone.timm_kwargs,
        "pool_stages": backbone.pool_stages,
        "preprocessing": backbone.preprocessing.to_dict(),
        "decoder": decoder(),  # how JPEGs are decoded (draft mode changes the pixels slightly)
        "precision": precision,
        "device": device_type,  # GPU kernels round differently from the CPU's
        "runtime": runtime,
        "mirror": mirror,
        "files": digest(f"{path}|{file_stamp(path)}|{label}\n" for path, label in items),
    }
    if calibration:  # only in int8: the keys of the other precisions stay as they were
        parts["calibration"] = calibration
    return digest([json.dumps(parts, sort_keys=True, default=str)])[:24]


def calibration_key(frozen: FrozenPass, calibration: list | None) -> str:
    """What the features depend on of the calibration images: in int8 their files_key, else nothing."""
    return quantize.files_key(calibration) if frozen.precision == "int8" else ""


def view_key(frozen: FrozenPass, backbone: Backbone, items: list[tuple[Path, int]], mirror: bool,
             calibrated: str) -> str:
    """cache_key of one view of `items` as `frozen` computes it: the engine its runtime resolves to, its device,
    and the calibration_key."""
    return cache_key(backbone, items, frozen.precision, frozen.engine, mirror, frozen.device.type, calibrated)


def extract_features(frozen: FrozenPass, backbone: Backbone, items: list[tuple[Path, int]], *, desc: str = "features",
                     mirror: bool = False, calibration: list | None = None) -> Features:
    """Features of every image (of its mirror image with `mirror`), from the cache when the key matches."""
    (features,) = extract_views(frozen, backbone, {desc: items}, [(desc, mirror)], calibration=calibration).values()
    return features


def extract_views(frozen: FrozenPass, backbone: Backbone, splits: dict[str, list[tuple[Path, int]]],
                  views: list[tuple[str, bool]], *,
                  calibration: list | None = None) -> dict[tuple[str, bool], Features]:
    """Features of each (split, mirror) view, one cache file each. What no cache file holds is computed in one
    pass over the images of every split that misses the same views: one loader and one decode per image, not
    one per split. The key holds the engine the runtime resolves to ("auto" becomes the engine it picks). Under
    torchrun every rank computes its shard, every rank gets the whole, and rank 0 writes the cache files.
    int8 calibrates on `calibration` (default the "train" split, else every image given)."""
    if frozen.precision == "int8":
        calibration = calibration or splits.get("train") or [item for items in splits.values() for item in items]
    calibrated = calibration_key(frozen, calibration)
    found: dict[tuple[str, bool], Features] = {}
    missing: dict[str, list[tuple[bool, Path | None]]] = {}  # split -> the views to compute, and their files
    for split, mirror in views:
        key = view_key(frozen, backbone, splits[split], mirror, calibrated)
        path = frozen.cache_dir / f"{key}.safetensors" if frozen.cache_dir else None
        cached = _cached(path)
        if distributed.all_true(cached is not None):  # a rank without it computes with the rest
            frozen.stats["hit"] += 1
            log.info("feature cache hit for %s%s (%s)", split, " mirrored" if mirror else "", path.name)
            found[split, mirror] = cached
        else:
            frozen.stats["miss"] += 1
            missing.setdefault(split, []).append((mirror, path))
    groups: dict[tuple[bool, ...], list[str]] = {}  # splits that miss the same views run as one
    for split, wanted in missing.items():
        groups.setdefault(tuple(mirror for mirror, _ in wanted), []).append(split)
    for mirrors, group in groups.items():
        items = [item for split in group for item in splits[split]]
        computed = forward_views(frozen, backbone.model, backbone.preprocessing, items, mirrors,
                                 desc=f"{backbone.spec.name} {'+'.join(group)}", store_dtype=torch.float32,
                                 name=backbone.spec.name, calibration=calibration)
        start = 0
        for split in group:
            for (mirror, path), whole in zip(missing[split], computed):
                found[split, mirror] = _write(path if frozen.cache_writable else None,
                                              _part(whole, start, splits[split], split), frozen.refused)
            start += len(splits[split])
    distributed.barrier()  # the files are complete before any rank looks for them again
    return {view: found[view] for view in views}


TENSORS = ("features", "labels", "indices")


class _Damaged(Damaged):
    """A cache file that cannot be read or does not match its checksum."""


def _checksum(tensors: dict[str, torch.Tensor], metadata: dict[str, str]) -> str:
    """CRC-32 of the tensors (name, dtype, shape, bytes) and the other metadata: what the file must hold to be used.
    CRC, as in zip and PNG: it catches damage, not tampering, at ~3 GB/s (SHA-256 ran at 0.56 GB/s here, half a
    second on every cached CIFAR-10 re-run)."""
    crc = zlib.crc32(json.dumps(metadata, sort_keys=True).encode())
    for name in sorted(tensors):
        tensor = tensors[name].contiguous()
        crc = zlib.crc32(f"{name}|{tensor.dtype}|{tuple(tensor.shape)}".encode(), crc)
        crc = zlib.crc32(tensor.reshape(-1).view(torch.uint8).numpy(), crc)
    return f"crc32:{crc:08x}"


def _cached(path: Path | None) -> Features | None:
    """The entry at `path` when there is one and it is intact (marked used); a damaged one is deleted (rank 0)."""
    return intact(path, _read, delete=distributed.is_main()) if path is not None else None


def _read(path: Path) -> Features:
    try:
        with safe_open(str(path), "pt") as f:
            metadata = dict(f.metadata() or {})
            tensors = {name: f.get_tensor(name) for name in TENSORS}
    except (SafetensorError, OSError, ValueError, KeyError) as exc:  # truncated, empty, not safetensors at all
        raise _Damaged(f"unreadable: {str(exc).splitlines()[0] if str(exc) else type(exc).__name__}") from exc
    written = metadata.pop("checksum", None)
    if written is None:
        raise _Damaged("no checksum (written by an older version)")
    if written != _checksum(tensors, metadata):
        raise _Damaged("checksum mismatch: its content changed after it was written")
    try:
        failed = json.loads(metadata["failed"])
    except (KeyError, ValueError) as exc:
        raise _Damaged("no list of failed files") from exc
    return Features(tensors["features"], tensors["labels"], tensors["indices"], failed, True)


def _write(path: Path | None, features: Features, refused: set[Path]) -> Features:
    """Store the features (rank 0); a write the disk refuses is one warning (once per entry: `refused`), and the
    run goes on uncached."""
    if path is not None and distributed.is_main():
        tensors = {"features": features.features, "labels": features.labels, "indices": features.indices}
        metadata = {"failed": json.dumps(features.failed)}
        # serialised in memory and written by Python: a full disk is then an OSError with its errno
        data = save(tensors, metadata={**metadata, "checksum": _checksum(tensors, metadata)})
        try:
            write_bytes_atomic(path, data, "the feature cache entry")
        except DiskError as exc:
            if path not in refused:  # a later pass over the same split (label issues) tries again, silently
                refused.add(path)
                log.warning("%s; going on without caching it", exc)
    return features


def _part(whole: Features, start: int, items: list[tuple[Path, int]], split: str) -> Features:
    """The rows of items[start:start + len(items)] of a pass over several splits, indexed within their split."""
    keep = (whole.indices >= start) & (whole.indices < start + len(items))
    if items and not keep.any():
        raise DataError(f"none of the {len(items)} images of {split} could be read")
    paths = {str(path) for path, _ in items}
    return Features(whole.features[keep], whole.labels[keep], whole.indices[keep] - start,
                    [f for f in whole.failed if f in paths], False)


def forward_frozen(frozen: FrozenPass, module: torch.nn.Module, preprocessing: Preprocessing, items, *,
                   desc: str = "features", store_dtype=torch.float32, mirror: bool = False,
                   name: str = "the frozen layers", calibration: list | None = None) -> Features:
    """Run a frozen module once over the images (with the pass's engine, see engines.py), or over their mirror
    images; unreadable files are skipped and listed. `name` is the model's, for the log. Under torchrun each rank
    runs its contiguous shard of the images and the shards are joined, in order, on every rank."""
    (features,) = forward_views(frozen, module, preprocessing, items, (mirror,), desc=desc, store_dtype=store_dtype,
                                name=name, calibration=calibration)
    return features


def forward_views(frozen: FrozenPass, module: torch.nn.Module, preprocessing: Preprocessing, items,
                  mirrors: tuple[bool, ...], *, desc: str, store_dtype, name: str, sinks: list | None = None,
                  calibration: list | None = None) -> list[Features]:
    """forward_frozen for several views of each image (`mirrors`: (False, True) gives the images and their mirror
    images) from one decoding pass: each image is read once, whatever the views. `sinks`, one per view, take the
    outputs as they are computed (`append`) and give the whole (`tensor()`); by default they are kept in RAM. int8
    calibrates on `calibration` (default `items`)."""
    side = small_square_side(items, preprocessing.input_size)  # decided on all the items: the same on every rank
    part = distributed.shard(len(items))
    frozen.stats["images"] += len(items[part]) * len(mirrors)  # this process's share
    mine = _forward_shard(frozen, module, preprocessing, items[part], side, mirrors, desc=desc,
                          store_dtype=store_dtype, name=name, sinks=sinks or [InMemory(store_dtype) for _ in mirrors],
                          calibration=calibration or items)
    joined = [_joined(view, part.start) for view in mine]
    if not len(joined[0].labels):
        raise DataError(f"none of the {len(items)} images of {desc} could be read")
    return joined


def _joined(mine: Features, offset: int) -> Features:
    """This process's shard joined with the other processes' (in rank order), indices into the whole split."""
    mine.indices += offset
    shards = distributed.gather(mine)
    if len(shards) == 1:
        return mine
    return Features(torch.cat([s.features for s in shards]), torch.cat([s.labels for s in shards]),
                    torch.cat([s.indices for s in shards]), [f for s in shards for f in s.failed], False)


def _forward_shard(frozen: FrozenPass, module: torch.nn.Module, preprocessing: Preprocessing, items, side: int | None,
                   mirrors: tuple[bool, ...], *, desc: str, store_dtype, name: str, sinks: list,
                   calibration: list) -> list[Features]:
    precision, device, batch_size = frozen.precision, frozen.device, frozen.batch_size
    transform, stage, example = _inputs(preprocessing, side)
    module = module.eval().to(device, memory_format=torch.channels_last)
    loader = image_loader(items, transform, batch_size=batch_size, workers=frozen.workers,
                          pin_memory=device.type == "cuda", prefetch=PREFETCH)
    # a notebook's bar too (tqdm's own test, disable=None, wants a terminal)
    batches = iter(bars.progress(loader, shown=frozen.bars and distributed.is_main(), desc=desc, leave=False,
                                 unit="batch"))
    labels, indices, failed = [], [], []
    calibrated = quantize.calibration_for(calibration, transform, preprocessing, side, batch_size) \
        if precision == "int8" else None
    # closed on the way out, whatever happened: its workers stop now, not when a kept traceback (a notebook's
    # sys.last_traceback after Ctrl-C) lets the loader go
    with contextlib.closing(batches), torch.inference_mode(), autocast(precision, device.type):
        # built (exported, compiled: ~1 s) while the workers, already started, decode the first batches
        forward = frozen_forward(module, example.to(device), precision, frozen.runtime, name, calibrated,
                                 frozen.engines, stage)

        def views():  # (sink, images) per view of each batch; the batches' labels and failures noted on the way
            for images, batch_labels, batch_indices, batch_failed in batches:
                failed.extend(str(items[i][0]) for i in batch_failed)
                if len(images):
                    images = to_device(images, device)
                    labels.append(batch_labels)
                    indices.append(batch_indices)
                    for view, mirror in zip(sinks, mirrors):
                        yield view, images.flip(-1) if mirror else images

        with contextlib.closing(in_order(forward, views())) as computed:  # closed: nothing left running on a failure
            for view, outputs in computed:
                view.append(outputs.to(store_dtype).cpu())
    empty = torch.empty(0, dtype=torch.long)
    labels, indices = (torch.cat(labels) if labels else empty), (torch.cat(indices) if indices else empty)
    return [Features(view.tensor(), labels.clone(), indices.clone(), list(failed), False, view.on_disk)
            for view in sinks]


def _inputs(preprocessing: Preprocessing, side: int | None) -> tuple[Callable, InputStage | None, torch.Tensor]:
    """(the workers' transform, the stage the frozen graph starts with, an example of the batches) for a pass.
    Small squares (`side`) are only decoded, and the graph resizes them too (data/thumbnails.py); photos are
    resized and cropped to uint8 pixels, and the graph normalises them (data/pixels.py); an eval transform with
    other steps gives the normalised floats itself."""
    key = (side, preprocessing)
    resize = batch_resize(preprocessing, side) if side else None
    if resize is not None:
        return Uint8Tensor(side), InputStage(resize, key), torch.zeros(1, 3, side, side, dtype=torch.uint8)
    return photo_inputs(preprocessing, key)


class InMemory:
    """The outputs of a frozen pass kept in RAM (forward_views' default sink)."""

    on_disk = False

    def __init__(self, dtype: torch.dtype):
        self.dtype, self.chunks = dtype, []

    def append(self, chunk: torch.Tensor) -> None:
        self.chunks.append(chunk)

    def tensor(self) -> torch.Tensor:
        return torch.cat(self.chunks) if self.chunks else torch.empty(0, dtype=self.dtype)
