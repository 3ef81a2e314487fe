"""Exact duplicate images across train / val / test, found by content hash.

A photo that is both in train and in test inflates test accuracy without anyone noticing; scraped and
user-collected datasets often hold such copies under different names.
"""
from __future__ import annotations

import dataclasses
import hashlib
from collections import Counter
from pathlib import Path

from showdown.data.folder import SPLITS, DatasetSpec


def content_hash(path: Path) -> str | None:
    try:
        return hashlib.blake2b(path.read_bytes(), digest_size=16).hexdigest()
    except OSError:
        return None  # unreadable files are reported when they are decoded


def file_size(path: Path) -> int | None:
    try:
        return path.stat().st_size
    except OSError:
        return None


def find_leaks(spec: DatasetSpec) -> list[dict]:
    """One record per val/test image whose bytes already appear in an earlier split (train, then val).
    Only files of the same size can be copies: a file whose size no other file has is not read at all."""
    sizes = {path: file_size(path) for split in SPLITS for path, _ in spec.splits[split]}
    shared = Counter(sizes[path] for split in SPLITS for path, _ in spec.splits[split])
    first_seen: dict[str, tuple[str, Path]] = {}
    leaks = []
    for split in SPLITS:
        for path, _ in spec.splits[split]:
            if sizes[path] is None or shared[sizes[path]] < 2:
                continue
            digest = content_hash(path)
            if digest is None:
                continue
            if digest in first_seen and first_seen[digest][0] != split:
                earlier_split, earlier = first_seen[digest]
                leaks.append({"split": split, "path": str(path), "duplicate_of": str(earlier),
                              "duplicate_split": earlier_split})
            first_seen.setdefault(digest, (split, path))
    return leaks


def check_leakage(spec: DatasetSpec, *, drop: bool) -> DatasetSpec:
    """The spec with a warning per kind of leak, and with the leaking val/test images removed when `drop`."""
    leaks = find_leaks(spec)
    if not leaks:
        return spec
    example = leaks[0]
    message = (f"{len(leaks)} val/test image(s) are exact copies of images in an earlier split, e.g. "
               f"'{Path(example['path']).name}' ({example['split']}) = '{Path(example['duplicate_of']).name}' "
               f"({example['duplicate_split']}); ")
    if not drop:
        return dataclasses.replace(spec, leaks=leaks, warnings=[
            *spec.warnings, message + "they inflate accuracy; --drop-duplicates removes them"])
    leaked = {(leak["split"], leak["path"]) for leak in leaks}
    splits = {split: [(p, y) for p, y in items if (split, str(p)) not in leaked]
              for split, items in spec.splits.items()}
    return dataclasses.replace(spec, splits=splits, leaks=leaks, warnings=[*spec.warnings, message + "dropped"])
