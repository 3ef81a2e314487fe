"""What showdown keeps on disk to save work, and how an entry of it is trusted, healed, listed and cleared.

A cache is an optimisation: an entry that cannot be read, or does not match what was written with it, is deleted
and recomputed with one warning line naming it, never a failed run. Kinds, under $SHOWDOWN_CACHE (else showdown/
in $XDG_CACHE_HOME or ~/.cache):
- features/: pooled backbone features, one safetensors file per (backbone, weights, preprocessing, files) key,
  checked by the checksum of its tensors written in its own header (frozen/feature_cache.py), and beside them the
  label-issue search's out-of-fold probabilities, one .npy per features-and-settings key, checked by the checksum
  in its name (experiment/label_issues.py);
- extracted/: archives extracted, and official CIFAR pickles converted to image folders, one folder each,
  checked against the manifest written last into it (every file's size and modification time; `manifest_problem`);
- int8/: models quantised for `--precision int8`, one folder each, checked by its manifest (frozen/quantize.py);
- imported/: TFLite and Keras weight files imported into timm's layout, one safetensors file per source file's
  fingerprint, checked like the features (models/backbones/imported.py);
- compiled/: the exported ONNX graphs of frozen models, keyed by the model's code and weights and checksummed
  (frozen/graph_cache.py), and OpenVINO's own cache of compiled models (its `CACHE_DIR`;
  frozen/openvino_engine.py), which OpenVINO keys by the graph, weights included, and its settings, and
  recompiles when an entry does not load;
- features/boundary/: boundary activations of a fine-tune that exceed the RAM budget, one memory-mapped file per
  view of a split, checked by the CRC-32 of its rows in its own trailer (frozen/disk_activations.py);
- thumbnails/: the report's thumbnails, one JSON bundle per image folder and size, checked by the checksum in its
  name; an image whose size or modification time changed is made again (reporting/thumbnails.py).
Boundary activations within the budget live in memory and do not outlive the run.

An entry's modification time is bumped when it is used, so `showdown cache clear --older-than DAYS` removes what
no run has used for that long.
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import shutil
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

from showdown.errors import ConfigError, DiskError
from showdown.fileio import digest, write_atomic, write_bytes_atomic

log = logging.getLogger(__name__)
T = TypeVar("T")
KINDS = {"features": "features", "datasets": "extracted", "weights": "imported", "engines": "compiled", "int8": "int8",
         "thumbnails": "thumbnails"}
BOUNDARY = "boundary"  # the boundary activations' folder, inside the features'
MANIFEST = ".showdown-manifest.json"
LOCK = ".lock"  # a kind's lock file, for processes taking turns at work in its folder (`lock_file`); not an entry
# Damaged entries deleted this process ("recomputed"): a run reports its share with its frozen passes.
STATS: Counter = Counter()


def cache_root() -> Path:
    """$SHOWDOWN_CACHE, else showdown/ in $XDG_CACHE_HOME (a cluster's scratch disk, where home has a quota; a
    relative one is ignored, as the XDG spec says), else ~/.cache/showdown."""
    if os.environ.get("SHOWDOWN_CACHE"):
        return Path(os.environ["SHOWDOWN_CACHE"])
    xdg = os.environ.get("XDG_CACHE_HOME", "")
    return (Path(xdg) if os.path.isabs(xdg) else Path.home() / ".cache") / "showdown"


def kind_folder(kind: str) -> Path:
    """The folder of one kind under the cache root (not created)."""
    return cache_root() / KINDS[kind]


def lock_file(kind: str) -> Path:
    """The lock file of a kind's folder (fileio.exclusive_lock), which `cache info` and `clear` leave alone."""
    return kind_folder(kind) / LOCK


def kind_folders(features: Path | None = None) -> dict[str, Path]:
    """Kind -> its folder; `features` is a run's --cache-dir when it has one."""
    folders = {kind: cache_root() / name for kind, name in KINDS.items()}
    features = features or folders["features"]
    return {**folders, "features": features, "boundary": features / BOUNDARY}


def discard(entry: Path, reason: str) -> None:
    """Delete a damaged entry (file or folder) so it is recomputed; one warning line naming it."""
    log.warning("damaged cache entry %s (%s): deleted, recomputing it", entry, reason)
    STATS["recomputed"] += 1
    try:
        if entry.is_dir() and not entry.is_symlink():
            shutil.rmtree(entry)
        else:
            entry.unlink(missing_ok=True)
    except OSError as exc:  # a read-only cache: the entry is recomputed all the same, just not replaced
        log.warning("could not delete %s (%s)", entry, exc.strerror or exc)


class Damaged(Exception):
    """A cache entry that cannot be read or fails its check; the message says how."""


def intact(entry: Path, read: Callable[[Path], T], *, delete: bool = True) -> T | None:
    """`read(entry)` when the entry is there and passes its check (it is then marked used); None when it is missing
    or damaged (`read` raised Damaged): a damaged entry is deleted with one warning where `delete` (the process that
    may write the cache)."""
    if not entry.is_file():
        if delete and entry.is_dir():  # a folder where the entry goes: no write could ever replace it
            discard(entry, "a folder, not a cache entry")
        return None
    try:
        value = read(entry)
    except Damaged as exc:
        if delete:
            discard(entry, str(exc))
        return None
    mark_used(entry)
    return value


NAMED_CHECKSUM_CHARS = 16


def _named_checksum(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()[:NAMED_CHECKSUM_CHARS]


def read_named(folder: Path, key: str, suffix: str, parse: Callable[[Path, bytes], T]) -> T | None:
    """`parse(entry, its bytes)` of the first entry `<key>-<checksum><suffix>` in `folder` whose bytes match the
    checksum in its name and parse (it is then marked used); an entry that fails either is deleted with one warning.
    None: no such entry."""
    for entry in sorted(folder.glob(f"{key}-*{suffix}")):
        try:
            data = entry.read_bytes()
        except FileNotFoundError:  # replaced by a newer version since the folder was listed
            continue
        try:
            if _named_checksum(data) != entry.name[len(key) + 1:-len(suffix)]:
                raise Damaged("its bytes do not match the checksum in its name")
            value = parse(entry, data)
        except Exception as exc:  # any entry that cannot be read or parsed is computed again
            discard(entry, str(exc) if isinstance(exc, Damaged) else type(exc).__name__)
            continue
        mark_used(entry)
        return value
    return None


def write_named(folder: Path, key: str, suffix: str, data: bytes) -> Path | None:
    """`data` kept as `<key>-<checksum><suffix>` in `folder`: that file, or None where the disk refuses it (a
    read-only or full cache: what it holds is used all the same, just not kept)."""
    entry = folder / f"{key}-{_named_checksum(data)}{suffix}"
    try:
        folder.mkdir(parents=True, exist_ok=True)
        write_bytes_atomic(entry, data)
    except (OSError, DiskError):
        return None
    return entry


def mark_used(entry: Path) -> None:
    """Bump the entry's modification time: `clear --older-than` goes by last use."""
    try:
        os.utime(entry)
    except OSError:
        pass  # a read-only cache is still a cache


# Folder entries: a manifest of every file's size and modification time, written last. A stat per file (no read)
# catches a truncated, emptied or rewritten file and a half-copied folder; the manifest carries its own checksum.
# A bit the medium flips without a write (size and time unchanged) is not seen: reading every image of a dataset
# on every run would cost more than the folder saves; such an image decodes wrongly or is skipped and listed.
def _stamps(folder: Path) -> dict[str, list[int]]:
    stamps = {}
    for path in sorted(folder.rglob("*")):
        if path.is_file() and path.name != MANIFEST:
            stat = path.stat()
            stamps[path.relative_to(folder).as_posix()] = [stat.st_size, stat.st_mtime_ns]
    return stamps


def _sealed(stamps: dict) -> str:
    return digest([json.dumps(stamps, sort_keys=True)])


def write_manifest(folder: Path) -> None:
    """Seal a filled folder entry (before it is renamed into place)."""
    stamps = _stamps(folder)
    write_atomic(folder / MANIFEST, json.dumps({"checksum": _sealed(stamps), "files": stamps}))


def manifest_problem(folder: Path) -> str | None:
    """Why the folder entry cannot be trusted, or None when every file is as it was written."""
    try:
        manifest = json.loads((folder / MANIFEST).read_text())
        files = manifest["files"]
        if manifest["checksum"] != _sealed(files):
            return "its manifest is damaged"
    except FileNotFoundError:
        return "no manifest (written by an older version, or never finished)"
    except (OSError, ValueError, KeyError, TypeError) as exc:
        return f"its manifest cannot be read ({type(exc).__name__})"
    for name, (size, mtime) in files.items():
        try:
            stat = (folder / name).stat()
        except OSError:
            return f"{name} is missing"
        if stat.st_size != size:
            return f"{name} is {stat.st_size} bytes, {size} were written"
        if stat.st_mtime_ns != mtime:
            return f"{name} was changed after it was written"
    return None


def verified_folder(folder: Path) -> bool:
    """True when the folder entry is there and intact (marked used); a damaged one is discarded (False)."""
    if not folder.is_dir():
        return False
    problem = manifest_problem(folder)
    if problem:
        discard(folder, problem)
        return False
    mark_used(folder / MANIFEST)
    return True


# `showdown cache info | clear`
@dataclass
class Usage:
    kind: str
    folder: Path
    entries: int
    bytes: int
    oldest_days: float | None  # since the least recently used entry was last used


def _entries(folder: Path) -> list[Path]:
    """The entries of a kind's folder; the boundary kind's folder inside the features' is not one of them."""
    children = sorted(folder.iterdir()) if folder.is_dir() else []
    return [child for child in children if not (child.name == BOUNDARY and child.is_dir()) and child.name != LOCK]


def _size(entry: Path) -> int:
    if entry.is_file() or entry.is_symlink():
        return entry.lstat().st_size
    return sum(p.lstat().st_size for p in entry.rglob("*") if p.is_file() or p.is_symlink())


def _last_used(entry: Path) -> float:
    marker = entry / MANIFEST if (entry / MANIFEST).is_file() else entry
    return marker.lstat().st_mtime


def usage(features: Path | None = None) -> list[Usage]:
    now, rows = time.time(), []
    for kind, folder in kind_folders(features).items():
        entries = _entries(folder)
        ages = [(now - _last_used(e)) / 86400 for e in entries]
        rows.append(Usage(kind, folder, len(entries), sum(map(_size, entries)), max(ages) if ages else None))
    return rows


# What a features folder holds (and clear deletes): feature sets, out-of-fold probabilities, killed writes' left-overs
FEATURE_ENTRY = re.compile(r"[0-9a-f]{24}\.safetensors|out-of-fold-[0-9a-f-]+\.npy|\..+\.(tmp|partial)")


def clear(features: Path | None = None, older_than_days: float | None = None) -> tuple[int, int]:
    """Delete the entries (of every kind) not used for `older_than_days`, or all; (entries, bytes) freed.
    Left-overs of killed writes (hidden .tmp files and .partial folders) go too. A features folder given by name
    (`--cache-dir`) that holds anything else is refused whole, nothing deleted: a mistyped folder is not a cache."""
    if features is not None:
        foreign = [entry.name for entry in _entries(features) if not FEATURE_ENTRY.fullmatch(entry.name)]
        if foreign:
            raise ConfigError(f"{features} is not a feature cache folder (it holds {foreign[0]}"
                              f"{f' and {len(foreign) - 1} more' if len(foreign) > 1 else ''}); nothing deleted")
    cutoff = time.time() - older_than_days * 86400 if older_than_days is not None else None
    count = freed = 0
    for folder in kind_folders(features).values():
        for entry in _entries(folder):
            if cutoff is not None and _last_used(entry) >= cutoff:
                continue
            size = _size(entry)
            if entry.is_dir() and not entry.is_symlink():
                shutil.rmtree(entry, ignore_errors=True)
            else:
                entry.unlink(missing_ok=True)
            count, freed = count + 1, freed + size
    return count, freed
