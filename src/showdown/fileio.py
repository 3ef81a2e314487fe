"""Files on disk: written so that no reader sees half of one, and identified without reading them.

The bottom layer, beside errors.py: any package may import it, it imports nothing of showdown but errors.py.
A write the disk refuses (no space, quota, read-only, permission) is a one-line DiskError naming the file.
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
from pathlib import Path, PurePath, PureWindowsPath

from showdown.errors import ConfigError, DiskError, disk_error


def current_umask() -> int:
    """The umask this process's files get: read from /proc, not set and reset (other threads may be making files);
    where there is no /proc, set and reset (os.umask can be read no other way)."""
    try:
        status = Path("/proc/self/status").read_text()
        return int(next(line.split()[1] for line in status.splitlines() if line.startswith("Umask:")), 8)
    except (OSError, StopIteration):  # no /proc (macOS, a sandbox), or a kernel that does not say
        mask = os.umask(0o077)
        os.umask(mask)
        return mask


# mkstemp and mkdtemp make their files 0600 and 0700 whatever the umask, so atomic writes apply it themselves: a
# run's report and models stay readable by whom the user's umask allows.
UMASK = current_umask()


@contextmanager
def disk_writes(path: Path, what: str = "") -> Iterator[None]:
    """Turns an OSError of the disk's (ENOSPC, EDQUOT, EROFS, EACCES) inside the block into a DiskError naming
    `path` and `what` was being written; the OSError of a write has no file name, so this is where it gets one."""
    try:
        yield
    except OSError as exc:
        error = disk_error(exc, path, what)
        if error is None:
            raise
        raise error from exc


@contextmanager
def atomic_path(path: Path, what: str = "") -> Iterator[Path]:
    """A temporary file beside `path` to write to; renamed onto `path` when the block succeeds, removed when
    it fails. A reader (or a run killed mid-write) sees the old file or the new one, never half of one."""
    with disk_writes(path, what):
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
        os.close(fd)
        tmp = Path(name)
        try:
            yield tmp
            os.chmod(tmp, 0o666 & ~UMASK)  # mkstemp's 0600 otherwise
            os.replace(tmp, path)
        finally:
            tmp.unlink(missing_ok=True)


@contextmanager
def atomic_dir(path: Path, what: str = "") -> Iterator[Path]:
    """A fresh folder to fill; renamed onto `path` when the block succeeds. Two processes filling the same `path`
    at once each fill a folder of their own: the first rename wins, the other copy is dropped."""
    with disk_writes(path, what):
        path.parent.mkdir(parents=True, exist_ok=True)
        partial = Path(tempfile.mkdtemp(dir=path.parent, prefix=f".{path.name}.", suffix=".partial"))
        try:
            yield partial
            os.chmod(partial, 0o777 & ~UMASK)
            try:
                partial.rename(path)
            except OSError:
                if not path.is_dir():  # not another process's finished copy: a real failure
                    raise
        finally:
            shutil.rmtree(partial, ignore_errors=True)


@contextmanager
def descriptors_redirected(fds: tuple[int, ...], target) -> Iterator[None]:
    """Inside, the process's file descriptors `fds` write into the open file `target`: what C++ code writes
    straight to them, which redirecting sys.stdout or sys.stderr does not reach."""
    saved = [os.dup(fd) for fd in fds]
    for fd in fds:
        os.dup2(target.fileno(), fd)
    try:
        yield
    finally:
        for fd, copy in zip(fds, saved):
            os.dup2(copy, fd)
            os.close(copy)


@contextmanager
def exclusive_lock(path: Path) -> Iterator[None]:
    """Inside, no other process on this machine holds the lock file `path` (made if missing): for work in a shared
    folder that is not atomic, such as a library writing its own cache. Without a lock where the file cannot be
    opened (a read-only folder), the filesystem has no locks (NFS without its lock service) or the platform no
    flock (Windows)."""
    try:
        import fcntl

        handle = open(path, "ab")
    except (ImportError, OSError):
        handle = None
    if handle is None:
        yield
        return
    with handle:  # closing it releases the lock, also where the process is killed inside
        try:
            fcntl.flock(handle, fcntl.LOCK_EX)
        except OSError:  # ENOLCK
            pass
        yield


def write_bytes_atomic(path: Path, data: bytes, what: str = "") -> None:
    """`data` as the file `path`, atomically; what a library would write to a path, serialised in memory first,
    so a full disk is a Python OSError (with its errno) rather than the library's own error."""
    with atomic_path(path, what) as tmp:
        tmp.write_bytes(data)


def write_atomic(path: Path, text: str, what: str = "") -> None:
    with atomic_path(path, what) as tmp:
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


def readable_size(size: float) -> str:
    """Bytes in GB, MB or KB (binary), with a decimal where it shows the size: a small cache is no "0 MB"."""
    if size >= 2**30:
        return f"{size / 2**30:.1f} GB"
    if size < 2**20:
        return f"{max(1, round(size / 2**10))} KB"
    return f"{size / 2**20:.{0 if size >= 10 * 2**20 else 1}f} MB"


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


def path_order(path: PurePath) -> tuple[str, ...]:
    """A sort key that orders paths as `<` does, several times faster: pathlib compares in Python, tuples of parts
    in C (0.06 s of the 0.1 s a TF-Flowers folder took to list). Windows paths compare without case, as there."""
    if isinstance(path, PureWindowsPath):
        return tuple(part.lower() for part in path.parts)
    return path.parts


def fingerprint(files: Iterable[Path]) -> str:
    """Identity of a set of files: their paths, sizes and modification times."""
    return digest(f"{path}|{file_stamp(path)}\n" for path in sorted(files, key=path_order))[:16]


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
    with disk_writes(path, "the run folder"):
        path.mkdir(parents=True, exist_ok=True)
    return path


def nearest_existing(path: Path) -> Path:
    """`path`, or the closest folder above it that exists (where it would be created)."""
    path = path.absolute()
    while not path.exists() and path != path.parent:
        path = path.parent
    return path


def check_output_file(output: str, example: str, name: str = "--output") -> None:
    """A ConfigError now, before any work, when --output (`name`) cannot name a file: empty, a folder, or inside a
    file. `example`: a file name to suggest (predictions.csv)."""
    path = Path(output)
    if not output:
        raise ConfigError(f"{name} is empty; name a file, e.g. {example}")
    if path.is_dir():
        raise ConfigError(f"{name} {output} is a folder; name a file in it, e.g. {path / example}")
    folder = nearest_existing(path.parent)
    if not folder.is_dir():
        raise ConfigError(f"{name} {output}: {folder} is a file, not a folder")


def check_writable(folder: Path, what: str) -> None:
    """A DiskError now, before any work, when `folder` (or the folder it would be made in) takes no new file."""
    place = nearest_existing(folder)
    if not place.is_dir():  # a file where the folder (or one above it) would be
        raise DiskError(f"could not write {what} {folder}: {place} is a file, not a folder",
                        cure=f"move {place} away")
    with disk_writes(folder, what):
        fd, name = tempfile.mkstemp(dir=place, prefix=".showdown-probe-")
        os.close(fd)
        os.unlink(name)
