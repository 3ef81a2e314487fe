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
from showdown.data.formats import opens_as_image


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


def _copies(spec: DatasetSpec) -> list[list[tuple[str, Path, int]]]:
    """The images of the dataset whose bytes another one has too, in groups of (split, path, label), in split
    order (train, val, test). Only files of the same size can be copies: a file whose size no other file has is
    not read at all. Files that are no image (text named .jpg) are left out: they are skipped when decoded."""
    items = [(split, path, label) for split in SPLITS for path, label in spec.splits[split]]
    sizes = {path: file_size(path) for _, path, _ in items}
    shared = Counter(sizes.values())
    groups: dict[str, list[tuple[str, Path, int]]] = {}
    for split, path, label in items:
        if sizes[path] is not None and shared[sizes[path]] > 1 and (digest := content_hash(path)) is not None:
            groups.setdefault(digest, []).append((split, path, label))
    return [group for group in groups.values() if len(group) > 1 and opens_as_image(group[0][1])]


def find_leaks(spec: DatasetSpec, copies: list | None = None) -> list[dict]:
    """One record per val/test image whose bytes already appear in an earlier split (train, then val)."""
    first = {path: group[0] for group in (_copies(spec) if copies is None else copies) for _, path, _ in group}
    return [{"split": split, "path": str(path), "duplicate_of": str(first[path][1]), "duplicate_split": first[path][0]}
            for split in SPLITS for path, _ in spec.splits[split] if path in first and first[path][0] != split]


def relabelled(spec: DatasetSpec, copies: list) -> str | None:
    """A warning when one photo is filed under two classes (the same bytes, two labels), None when none is."""
    mixed = [group for group in copies if len({label for _, _, label in group}) > 1]
    if not mixed:
        return None
    (_, a, label_a), (_, b, label_b) = next((x, y) for x, y in zip(mixed[0], mixed[0][1:]) if x[2] != y[2])
    return (f"{len(mixed)} image(s) are filed under two or more classes as exact copies, e.g. '{a.name}' "
            f"({spec.classes[label_a]}) = '{b.name}' ({spec.classes[label_b]}); at most one label is right")


def check_leakage(spec: DatasetSpec, *, drop: bool) -> DatasetSpec:
    """The spec with a warning per kind of leak, and with the leaking val/test images removed when `drop`; a
    warning too for a photo filed under two classes."""
    copies = _copies(spec)
    leaks = find_leaks(spec, copies)
    mixed = relabelled(spec, copies)
    spec = dataclasses.replace(spec, warnings=[*spec.warnings, mixed]) if mixed else spec
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
