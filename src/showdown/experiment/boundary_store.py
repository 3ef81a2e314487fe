"""Where boundary activations that exceed the RAM budget go: memory-mapped files in the cache folder
(frozen/disk_activations.py), when the disk has room for them, one process runs the run, and --no-boundary-disk
was not given; else fine-tuning runs the full forward."""
from __future__ import annotations

import shutil
from pathlib import Path

import torch
from torch import nn

from showdown import distributed
from showdown.cache import BOUNDARY
from showdown.experiment.context import Entry
from showdown.frozen import disk_activations
from showdown.frozen.disk_activations import RowWriter, entry_path
from showdown.frozen.feature_cache import Features, calibration_key, view_key
from showdown.frozen.weights_key import weights_digest

HEADROOM = 512 * 2**20  # bytes the disk keeps free beyond the activations, for everything else the run writes


def disk_folder(cache_dir: Path | None, need: int, allowed: bool = True,
                writable: bool = True) -> tuple[Path | None, str]:
    """(the folder to keep `need` bytes of activations in, "") or (None, why not, as a clause for the log line).
    `writable`: whether the cache folder takes new files."""
    if not allowed:
        return None, "; the disk cache is off (--no-boundary-disk)"
    if distributed.active():  # each process would write and map its own copy: not worth its complexity
        return None, "; the disk cache serves one process only, not torchrun"
    if cache_dir is None:
        return None, "; no cache folder to keep them on disk"
    if not writable:
        return None, f"; the cache folder {cache_dir} takes no new file"
    folder = cache_dir / BOUNDARY
    probe = folder if folder.is_dir() else cache_dir if cache_dir.is_dir() else cache_dir.parent
    free = shutil.disk_usage(probe).free if probe.is_dir() else 0
    if free < need + HEADROOM:
        return None, f", and the disk at {cache_dir} has {free / 2**30:.1f} GB free"
    return folder, ""


class DiskViews:
    """The boundary activations of an entry's splits as entries of the disk cache: found intact, or written."""

    def __init__(self, entry: Entry, bottom: nn.Module, folder: Path):
        self.entry, self.folder = entry, folder
        self.bottom_digest = weights_digest(bottom)
        # int8: the bottom is quantised on the train split (phases.py), as extract_views keys its features
        self.calibrated = calibration_key(entry.run.frozen, entry.dataset.splits.get("train"))

    def path(self, split: str, mirror: bool, dtype: torch.dtype) -> Path:
        key = view_key(self.entry.run.frozen, self.entry.backbone, self.entry.dataset.splits[split], mirror,
                       self.calibrated)
        return entry_path(self.folder, key, self.bottom_digest, dtype)

    def cached(self, split: str, mirrors: tuple[bool, ...], dtype: torch.dtype) -> list[Features] | None:
        """Every view of the split from intact files, or None (a damaged one deleted, with one warning)."""
        found = [disk_activations.read(self.path(split, mirror, dtype)) for mirror in mirrors]
        return None if any(view is None for view in found) else found

    def writers(self, split: str, mirrors: tuple[bool, ...], dtype: torch.dtype) -> list[RowWriter]:
        return [RowWriter(self.path(split, mirror, dtype), dtype) for mirror in mirrors]
