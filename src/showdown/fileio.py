"""Files on disk: written so that no reader sees half of one, and identified without reading them.

The bottom layer, beside errors.py: any package may import it, it imports nothing of showdown.
"""
from __future__ import annotations

import csv
import hashlib
import io
import json
import os
import re
import shutil
import tempfile
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path


@contextmanager
def atomic_path(path: Path) -> Iterator[Path]:
    """A temporary file beside `path` to write to; renamed onto `path` when the block succeeds, removed when
    it fails. A reader (or a run killed mid-write) sees the old file or the new one, never half of one."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    tmp = Path(name)
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


@contextmanager
def atomic_dir(path: Path) -> Iterator[Path]:
    """A fresh folder to fill; renamed onto `path` (which must not exist yet) when the block succeeds."""
    partial = path.with_name(f".{path.name}.partial")
    shutil.rmtree(partial, ignore_errors=True)
    partial.mkdir(parents=True)
    try:
        yield partial
        partial.rename(path)
    finally:
        shutil.rmtree(partial, ignore_errors=True)


def write_atomic(path: Path, text: str) -> None:
    with atomic_path(path) as tmp:
        # backslashreplace: a file name that is not valid UTF-8 is written escaped instead of failing the run
        tmp.write_text(text, encoding="utf-8", errors="backslashreplace", newline="")


def write_json(path: Path, data) -> None:
    write_atomic(path, json.dumps(data, indent=2, default=str) + "\n")


def write_csv(path: Path, rows: list[dict]) -> None:
    if not rows:
        return
    buffer = io.StringIO()
    fields = list(dict.fromkeys(key for row in rows for key in row))  # rows of different strategies differ
    writer = csv.DictWriter(buffer, fieldnames=fields)
    writer.writeheader()
    writer.writerows(rows)
    write_atomic(path, buffer.getvalue())


def file_stamp(path: Path) -> str:
    """Size and modification time: changes when a file is edited or replaced, and costs no read."""
    stat = path.stat()
    return f"{stat.st_size}|{stat.st_mtime_ns}"


def digest(lines: Iterable[str]) -> str:
    """SHA-256 (hex) of text lines; file names that are not valid UTF-8 are hashed by their bytes."""
    hasher = hashlib.sha256()
    for line in lines:
        hasher.update(line.encode(errors="surrogateescape"))
    return hasher.hexdigest()


def fingerprint(files: Iterable[Path]) -> str:
    """Identity of a set of files: their paths, sizes and modification times."""
    return digest(f"{path}|{file_stamp(path)}\n" for path in sorted(files))[:16]


def slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "-", text).strip("-") or "run"


def new_run_dir(out: str | None, name: str) -> Path:
    """`out`, or a new `runs/<timestamp>-<name>` folder (with a ~2, ~3 suffix if that exists)."""
    if out:
        path = Path(out)
    else:
        path = Path("runs") / f"{datetime.now():%Y%m%d-%H%M%S}-{slug(name)}"
        suffix = 1
        while path.exists():
            suffix += 1
            path = path.with_name(f"{path.name.rsplit('~', 1)[0]}~{suffix}")
    path.mkdir(parents=True, exist_ok=True)
    return path
