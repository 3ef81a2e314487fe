"""Scan an ImageFolder tree (one sub-folder per class, optionally under train/ val/ test/) and split it."""
from __future__ import annotations

import collections
import dataclasses
import logging
import os
import random
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from showdown.data.formats import IMAGE_SUFFIXES, check_readable, opens_as_image
from showdown.errors import DataError
from showdown.fileio import fingerprint, path_order

log = logging.getLogger(__name__)
SPLITS = ("train", "val", "test")
_SPLIT_ALIASES = {"train": "train", "val": "val", "valid": "val", "validation": "val", "test": "test"}


@dataclass
class DatasetSpec:
    """Which files, which labels, which split: everything later stages need about the data."""

    name: str
    root: Path
    classes: list[str]
    splits: dict[str, list[tuple[Path, int]]]
    split_source: str  # "given" or how the split was made
    fingerprint: str  # changes when any file is added, removed, resized or touched
    warnings: list[str] = field(default_factory=list)
    leaks: list[dict] = field(default_factory=list)  # val/test images duplicating an earlier split's

    def counts(self) -> dict[str, int]:
        return {name: len(items) for name, items in self.splits.items()}


def is_visible(name: str) -> bool:
    """Hidden files and macOS archive debris are never data."""
    return not name.startswith(".") and name != "__MACOSX"


def image_name(name: str) -> bool:
    """A visible file name with an image suffix (its content is the decoder's to judge)."""
    return is_visible(name) and os.path.splitext(name)[1].lower() in IMAGE_SUFFIXES


def _class_folders(root: Path) -> list[Path]:
    return sorted((p for p in root.iterdir() if p.is_dir() and is_visible(p.name)), key=lambda p: p.name)


def images_in(folder: Path) -> list[Path]:
    """The visible image files below `folder`, in sorted order, linked folders included (Path.rglob does not enter
    them): each real folder is read once, by its shortest path (breadth first), so a link looping back adds
    nothing, and a link to `folder` itself or above it (the dataset's root, whose other classes would be read as
    this one) is not followed."""
    top = os.path.realpath(folder)
    found, read, waiting, broken = [], set(), collections.deque([folder]), []
    while waiting:
        current = waiting.popleft()
        try:
            seen = identity(current)
            if seen in read:
                continue
            read.add(seen)
            with os.scandir(current) as listing:
                entries = sorted(listing, key=lambda entry: entry.name)
        except OSError:  # a folder that cannot be read, or a broken link: no images from it (as rglob skipped it)
            continue
        for entry in entries:
            if not is_visible(entry.name):
                continue
            try:  # one entry that cannot be looked at (a link in a loop, no permission) costs only itself
                if entry.is_dir():
                    if not (entry.is_symlink() and _contains(os.path.realpath(entry.path), top)):
                        waiting.append(Path(entry.path))
                elif entry.is_file() and image_name(entry.name):
                    found.append(Path(entry.path))
                elif entry.is_symlink() and not os.path.exists(entry.path) and image_name(entry.name):  # moved
                    broken.append(entry.path)
            except OSError:
                continue
    if broken:
        log.warning("%d broken symbolic link(s) in %s skipped, e.g. %s", len(broken), folder, min(broken))
    found.sort(key=path_order)
    check_readable(found, folder)
    return found


def identity(path: Path) -> tuple:
    """What tells two paths of one file or folder: device and inode, or the real path where the file system gives
    no inode numbers (some Windows and network file systems report 0)."""
    stat = os.stat(path)
    return (stat.st_dev, stat.st_ino) if stat.st_ino else (os.path.realpath(path),)


def _contains(outer: str, inner: str) -> bool:
    """Whether the real folder `outer` is `inner` or above it."""
    return inner == outer or inner.startswith(outer.rstrip(os.sep) + os.sep)


def scan_classes(root: Path, warnings: list[str]) -> dict[str, list[Path]]:
    """Class name -> image files; empty class folders, and images beside the class folders (of no class), are
    warned about and left out."""
    loose = _loose_images(root)
    if loose:
        warnings.append(f"{len(loose)} image(s) directly in {root}, e.g. '{loose[0]}', are in no class folder and "
                        "were ignored")
    found: dict[str, list[Path]] = {}
    for folder in _class_folders(root):
        images = images_in(folder)
        if images:
            found[folder.name] = images
        else:
            warnings.append(f"class folder '{folder.name}' has no images and was ignored")
    dangling = _dangling_folders(root)
    if dangling:
        warnings.append(f"{len(dangling)} symbolic link(s) in {root} point to nothing and were ignored, e.g. "
                        f"'{dangling[0]}' -> {os.readlink(root / dangling[0])}")
    repeated = _repeated_subfolders(root, sorted(found))
    if repeated:
        warnings.append(f"the class folders {', '.join(sorted(found))} hold no images of their own, only the same "
                        f"sub-folders ({', '.join(repeated)}): they are trained as the classes; if "
                        f"{', '.join(repeated)} are the classes, gather each one's images into one folder")
    return found


def _dangling_folders(root: Path) -> list[str]:
    """Visible links beside the class folders whose target is gone (a moved or unmounted class folder)."""
    with os.scandir(root) as listing:
        return sorted(entry.name for entry in listing if is_visible(entry.name) and entry.is_symlink()
                      and not image_name(entry.name) and not os.path.exists(entry.path))


def _repeated_subfolders(root: Path, classes: list[str]) -> list[str]:
    """The sub-folder names all class folders share when none holds an image itself: batch1/daisy and
    batch2/daisy read as the classes batch1 and batch2, which is seldom what was meant."""
    shared: set[str] | None = None
    for name in classes:
        try:
            with os.scandir(root / name) as listing:
                entries = list(listing)
        except OSError:  # a class folder that cannot be listed: nothing to tell
            return []
        if any(image_name(entry.name) and entry.is_file() for entry in entries):
            return []
        inner = {entry.name for entry in entries if is_visible(entry.name) and entry.is_dir()}
        shared = inner if shared is None else shared & inner
    return sorted(shared) if len(classes) >= 2 and shared and len(shared) >= 2 else []


def _loose_images(root: Path) -> list[str]:
    try:
        with os.scandir(root) as listing:
            return sorted(entry.name for entry in listing if image_name(entry.name) and entry.is_file())
    except OSError:
        return []


def given_splits(root: Path) -> dict[str, Path]:
    """train/ val/ test/ sub-folders, when the tree is already split (train is required)."""
    found = {}
    for folder in _class_folders(root):
        split = _SPLIT_ALIASES.get(folder.name.lower())
        if split:
            found[split] = folder
    return found if "train" in found and len(found) >= 2 else {}


def stratified_split(per_class: dict[str, list[Path]], fractions: tuple[float, float, float], seed: int,
                     wanted: tuple[str, ...] = SPLITS) -> dict[str, dict[str, list[Path]]]:
    """Split every class on its own with the same fractions, so each split keeps the class balance.

    Deterministic for a seed; each class keeps at least one training image.
    """
    train_frac, val_frac, test_frac = fractions
    rng = random.Random(seed)
    out: dict[str, dict[str, list[Path]]] = {s: {} for s in wanted}
    for name, files in per_class.items():
        files = list(files)
        rng.shuffle(files)
        n = len(files)
        n_test = round(n * test_frac) if "test" in wanted else 0
        n_val = round(n * val_frac) if "val" in wanted else 0
        while n_test + n_val > n - 1 and (n_test or n_val):  # keep one image for training
            if n_test >= n_val:
                n_test -= 1
            else:
                n_val -= 1
        parts = {"test": files[:n_test], "val": files[n_test:n_test + n_val], "train": files[n_test + n_val:]}
        for split in wanted:
            out[split][name] = sorted(parts[split], key=path_order)
    return out


def build_spec(name: str, root: Path, fractions: tuple[float, float, float], seed: int) -> DatasetSpec:
    warnings: list[str] = []
    split_dirs = given_splits(root)
    if split_dirs:
        per_split = {split: scan_classes(folder, warnings) for split, folder in split_dirs.items()}
        classes = sorted(set().union(*per_split.values()))
        missing = [s for s in SPLITS if s not in per_split]
        if missing:  # carve the missing split(s) out of train, stratified
            rest = fractions[0] + sum(fractions[SPLITS.index(s)] for s in missing)
            sub = tuple(f / rest if split == "train" or split in missing else 0.0
                        for split, f in zip(SPLITS, fractions))
            carved = stratified_split(per_split["train"], sub, seed, wanted=tuple(["train", *missing]))
            per_split.update(carved)
            source = f"given {', '.join(split_dirs)}; {', '.join(missing)} carved from train (seed {seed})"
        else:
            source = "given"
    else:
        per_class = scan_classes(root, warnings)
        classes = sorted(per_class)
        per_split = stratified_split(per_class, fractions, seed)
        source = "stratified {:.0f}/{:.0f}/{:.0f}, seed {}".format(*(100 * f for f in fractions), seed)
    untaught = [c for c in classes if not per_split["train"].get(c)]  # only given splits can lack one in train
    if untaught:
        taught = {c.casefold(): c for c in per_split["train"]}
        cased = [f"'{c}' is '{taught[c.casefold()]}' in train/" for c in untaught if c.casefold() in taught]
        raise DataError(f"class {', '.join(untaught)}: no training images in {split_dirs['train']}, only in "
                        "another split: a model cannot learn it; add some to train/, or take it out of the others"
                        + (f" (class names are case-sensitive: {', '.join(cased)})" if cased else ""))
    for split in SPLITS:
        absent = [c for c in classes if not per_split[split].get(c)]
        if absent:
            warnings.append(f"split '{split}' has no images of class {', '.join(absent)}"
                            + (" (too few images to split)" if not split_dirs else ""))
    if len(classes) < 2:
        inner = root / classes[0] if classes and not split_dirs else None
        wrapped = inner is not None and len(_class_folders(inner)) >= 2  # a guess: said as a question
        raise DataError(
            f"{root} has {len(classes)} class folder(s) with images; a classifier needs at least 2 "
            "(one sub-folder per class, e.g. data/cats/*.jpg and data/dogs/*.jpg)"
            + (f"; its one folder holds class folders: did you mean --data {inner}?" if wrapped else "")
        )
    index = {c: i for i, c in enumerate(classes)}
    splits = {
        split: [(path, index[c]) for c in classes for path in per_split[split].get(c, [])] for split in SPLITS
    }
    for split, items in splits.items():
        if not items:
            raise DataError(f"the {split} split of {root} is empty; add images or change --split")
    all_files = [path for items in splits.values() for path, _ in items]
    return DatasetSpec(name, root, classes, splits, source, fingerprint(all_files), warnings)


def subset_per_class(spec: DatasetSpec, train_per_class: int) -> DatasetSpec:
    """The first N training images of each class (a quarter of that for val and test), for quick runs."""
    limits = {"train": train_per_class, "val": max(2, train_per_class // 4), "test": max(2, train_per_class // 4)}
    splits = {}
    for split, items in spec.splits.items():
        kept, taken = [], Counter()
        for path, label in items:
            if taken[label] < limits[split]:
                kept.append((path, label))
                taken[label] += 1
        splits[split] = kept
    source = f"{spec.split_source}; subset of {train_per_class} train images per class"
    return dataclasses.replace(spec, splits=splits, split_source=source)


def check_classes_open(spec: DatasetSpec) -> None:
    """A DataError when a class's training files are all unreadable (text files named .jpg, emptied copies): the
    model would get an output it never learns. A header read per class where its first file is an image; every
    file only of a class with none."""
    per_class: dict[int, list[Path]] = {}
    for path, label in spec.splits["train"]:
        per_class.setdefault(label, []).append(path)
    dead = [f"{spec.classes[label]} ({len(paths)} file(s), e.g. {paths[0]})" for label, paths in per_class.items()
            if not any(opens_as_image(path) for path in paths)]
    if dead:
        raise DataError(f"class {', '.join(dead)}: none of its training files is an image, so a model cannot "
                        "learn it; replace them, or take the class out")


def without_files(dataset: DatasetSpec, paths: set[str], why: str) -> DatasetSpec:
    """The dataset less the files `paths` (in whichever split they are), the split otherwise unchanged; `why`
    joins the split's description ("without 12 suspected label errors")."""
    splits = {split: [item for item in items if str(item[0]) not in paths] for split, items in dataset.splits.items()}
    return dataclasses.replace(dataset, splits=splits, split_source=f"{dataset.split_source}; {why}")

