"""Boundary activations on disk, for when they do not fit the RAM budget: written once, read back memory-mapped.

Why a raw file read through numpy.memmap: rows are appended as the frozen pass computes them (how many images are
readable is known only at the end, which a safetensors header needs first), and numpy maps the file lazily and
hands it to torch without a copy (bf16 rows as int16, viewed back as bf16). A batch reads only its rows and the
page cache keeps what RAM can hold; safetensors' torch loader would copy every tensor into RAM, which is what this
avoids.

An entry is one file: the rows, then a JSON trailer (shape, dtype, labels, indices, unreadable files, CRC-32 of
the rows), its CRC-32 and its length. It is written beside its place and renamed into it when complete. It is
trusted only when its trailer reads, its size is what the trailer says and the CRC of its rows matches (a full read,
which fills the page cache for the first epoch too); else it is deleted and recomputed with one warning (cache.py).
The key covers what changes the activations: the feature cache's key (backbone, weights, preprocessing, precision,
engine, files) and the frozen bottom's own weights (weights_key.weights_digest).
"""
from __future__ import annotations

import json
import logging
import os
import tempfile
import zlib
from pathlib import Path

import numpy as np
import torch

from showdown.cache import Damaged, intact
from showdown.fileio import digest, disk_writes
from showdown.frozen.feature_cache import Features

log = logging.getLogger(__name__)
SUFFIX = ".boundary"
_TAIL = 12  # the trailer's CRC-32 (4 bytes) and length (8 bytes), little-endian
_CHUNK = 64 * 2**20  # bytes read at a time for the CRC of an entry's rows
_INTS = {2: np.int16, 4: np.int32}  # numpy's view of a torch dtype's bytes, by item size
_DTYPES = {str(dtype): dtype for dtype in (torch.bfloat16, torch.float16, torch.float32)}


def entry_path(folder: Path, view_key: str, bottom_digest: str, store_dtype: torch.dtype) -> Path:
    return folder / f"{digest([view_key, bottom_digest, str(store_dtype)])[:24]}{SUFFIX}"


class RowWriter:
    """Rows appended to a hidden file beside `path` as the frozen pass computes them; `tensor()` maps what was
    written, `seal()` adds the trailer and renames the file into place, `drop()` removes it."""

    on_disk = True

    def __init__(self, path: Path, dtype: torch.dtype):
        with disk_writes(path, "the boundary cache"):
            path.parent.mkdir(parents=True, exist_ok=True)
            fd, name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
        self.path, self.tmp, self.dtype = path, Path(name), dtype
        self.file = os.fdopen(fd, "wb")
        self.crc, self.rows, self.row_shape = 0, 0, ()

    def append(self, chunk: torch.Tensor) -> None:
        chunk = chunk.to(self.dtype).contiguous()
        data = chunk.reshape(-1).view(torch.uint8).numpy()
        with disk_writes(self.path, "the boundary cache"):
            self.file.write(data)
        self.crc = zlib.crc32(data, self.crc)
        self.rows, self.row_shape = self.rows + len(chunk), tuple(chunk.shape[1:])

    def tensor(self) -> torch.Tensor:
        with disk_writes(self.path, "the boundary cache"):
            self.file.flush()
        return _mapped(self.tmp, self.dtype, (self.rows, *self.row_shape))

    def seal(self, features: Features) -> Features:
        """The trailer written and the file in place; `features` with its rows mapped from the file."""
        trailer = json.dumps({"dtype": str(self.dtype), "shape": [self.rows, *self.row_shape], "crc": self.crc,
                              "labels": features.labels.tolist(), "indices": features.indices.tolist(),
                              "failed": features.failed}).encode()
        with disk_writes(self.path, "the boundary cache"):
            self.file.write(trailer + zlib.crc32(trailer).to_bytes(4, "little") + len(trailer).to_bytes(8, "little"))
            self.file.close()
            os.replace(self.tmp, self.path)  # the mapping made by tensor() stays valid: the same file
        return features

    def drop(self) -> None:
        self.file.close()
        self.tmp.unlink(missing_ok=True)


def _mapped(path: Path, dtype: torch.dtype, shape: tuple[int, ...]) -> torch.Tensor:
    """The file's first rows as a tensor paged in on use. Copy-on-write: writable for torch, never written back."""
    if not shape[0]:
        return torch.empty(shape, dtype=dtype)
    rows = np.memmap(path, dtype=_INTS[dtype.itemsize], mode="c", shape=shape)
    return torch.from_numpy(rows).view(dtype)


class _Damaged(Damaged):
    pass


def read(path: Path) -> Features | None:
    """The entry at `path` when it is there and intact (marked used); a damaged one is deleted (one warning)."""
    return intact(path, _read)


def _read(path: Path) -> Features:
    try:
        size = path.stat().st_size
        with open(path, "rb") as handle:
            if size < _TAIL:
                raise _Damaged(f"{size} bytes: truncated")
            handle.seek(size - _TAIL)
            tail = handle.read(_TAIL)
            crc, length = int.from_bytes(tail[:4], "little"), int.from_bytes(tail[4:], "little")
            if length > size - _TAIL:
                raise _Damaged("truncated: no trailer")
            handle.seek(size - _TAIL - length)
            trailer = handle.read(length)
            if zlib.crc32(trailer) != crc:
                raise _Damaged("its trailer does not match its checksum (truncated or changed)")
            meta = json.loads(trailer)
            dtype, shape = _DTYPES[meta["dtype"]], tuple(meta["shape"])
            data = int(np.prod(shape)) * dtype.itemsize
            if data != size - _TAIL - length:
                raise _Damaged(f"{size - _TAIL - length} bytes of rows, {data} were written")
            handle.seek(0)
            rows_crc, left = 0, data
            while left:
                block = handle.read(min(_CHUNK, left))
                if not block:
                    raise _Damaged("truncated rows")
                rows_crc, left = zlib.crc32(block, rows_crc), left - len(block)
            if rows_crc != meta["crc"]:
                raise _Damaged("checksum mismatch: its rows changed after they were written")
            labels, indices = torch.tensor(meta["labels"], dtype=torch.long), torch.tensor(meta["indices"])
            failed = list(meta["failed"])
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise _Damaged(f"unreadable ({type(exc).__name__})") from exc
    return Features(_mapped(path, dtype, shape), labels, indices.to(torch.long), failed, True, on_disk=True)
