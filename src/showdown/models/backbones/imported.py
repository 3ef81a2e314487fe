"""Weights imported from another format (TFLite, Keras HDF5, a weights package), kept as safetensors in the cache
folder so that the next run loads them instead of parsing the source file and mapping it again.

Importing means reading a flatbuffer or an HDF5 file, building a template timm model and mapping every tensor onto
it: 0.2-0.7 s per run on the 2-core CPU (docs/performance.md). An entry is keyed by the source files (path, size
and modification time, as the feature cache keys images), the architecture asked for, the versions of torch and
timm, and the bytes of the importing code (this package's modules): an edited weights file or importer imports
afresh. The entry's name carries the checksum of its bytes, checked on every read; a damaged entry is deleted with
one warning line and the weights imported again (cache.py's rule).
"""
from __future__ import annotations

import hashlib
import json
import logging
from pathlib import Path
from typing import Callable

import timm
import torch
from safetensors.torch import load, save

from showdown.cache import kind_folder, read_named, write_named
from showdown.fileio import file_stamp
from showdown.models.backbones.found import FoundWeights
from showdown.models.backbones.registry import BackboneSpec

log = logging.getLogger(__name__)
_IMPORTERS = Path(__file__).parent  # the code that maps a source file onto timm's keys


def import_key(sources: list[Path], spec: BackboneSpec) -> str:
    hasher = hashlib.sha256()
    for source in sources:
        hasher.update(f"{source.resolve()}|{file_stamp(source)}\n".encode(errors="surrogateescape"))
    hasher.update(f"{spec.timm_name} {sorted(spec.timm_kwargs.items())} {torch.__version__} {timm.__version__}"
                  .encode())
    for code in sorted(_IMPORTERS.glob("*.py")):
        hasher.update(code.read_bytes())
    return hasher.hexdigest()


def cached_import(sources: list[Path], spec: BackboneSpec, importer: Callable[[], FoundWeights]) -> FoundWeights:
    """`importer()`'s weights of `sources`, from the cache when an intact entry is there, else imported and kept."""
    key, cache = import_key(sources, spec), kind_folder("weights")
    found = read_named(cache, key, ".safetensors", _parse)
    if found is None:
        found = importer()
        _write(cache, key, found)
    return found


def is_cached(sources: list[Path], spec: BackboneSpec) -> bool:
    """Whether an entry of these sources is in the cache (not read: cached_import checks it when it loads)."""
    return any(kind_folder("weights").glob(f"{import_key(sources, spec)}-*.safetensors"))


def _parse(entry: Path, data: bytes) -> FoundWeights:
    header_size = int.from_bytes(data[:8], "little")
    described = json.loads(json.loads(data[8:8 + header_size])["__metadata__"]["found"])
    state = load(data)
    return FoundWeights({name: state[name] for name in described["order"]}, _tuples(described["preprocessing"]),
                        _tuples(described["timm_kwargs"]), described["timm_name"])


def _tuples(values: dict) -> dict:
    """JSON gives lists where the importer wrote tuples."""
    return {key: tuple(value) if isinstance(value, list) else value for key, value in values.items()}


def _write(cache: Path, key: str, found: FoundWeights) -> None:
    described = {"order": list(found.state_dict), "preprocessing": found.preprocessing,
                 "timm_kwargs": found.timm_kwargs, "timm_name": found.timm_name}
    # safetensors refuses tensors that share memory; a copy of each is what the cache keeps anyway
    data = save({name: t.detach().cpu().contiguous().clone() for name, t in found.state_dict.items()},
                metadata={"found": json.dumps(described)})
    if not write_named(cache, key, ".safetensors", data):  # the weights are used all the same
        log.info("imported weights not cached (the disk refused %s)", cache)
