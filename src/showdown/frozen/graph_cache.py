"""The ONNX graphs of frozen models, kept in the cache folder so that a re-run does not export them again.

The TorchScript ONNX export of a frozen backbone costs 0.5-1 s on a quiet 2-core CPU, 4-7 s under load
(docs/performance.md), more than the OpenVINO compile that follows it, which OpenVINO's own cache already skips
(engines.py). An entry is keyed by everything that decides the graph: the module tree as PyTorch prints it, the
source files of every module class in it (a changed forward is another graph), every tensor's name, dtype, shape
and bytes, the example input's shape and dtype, and the versions of torch and of the exporter code. Hashing the
tensors of EfficientNet-Lite0 (13 MB) costs about 20 ms.

The entry's name carries the checksum of its bytes, checked on every read: a damaged file is deleted and the
graph exported again (cache.py's rule).
"""
from __future__ import annotations

import hashlib
import itertools
import sys
from pathlib import Path
from typing import Callable

import torch

from showdown.cache import kind_folder, read_named, write_named
from showdown.models import onnx_graph


def graph_key(model: torch.nn.Module, example: torch.Tensor) -> str:
    """What the exported graph of `model` at `example`'s shape depends on, as a hex digest."""
    hasher = hashlib.sha256()
    hasher.update(repr(model).encode())
    hasher.update(f"{tuple(example.shape[1:])} {example.dtype} {torch.__version__}".encode())
    sources = {Path(onnx_graph.__file__), Path(__file__)}
    for module in model.modules():
        source = getattr(sys.modules.get(type(module).__module__), "__file__", None)
        if source:
            sources.add(Path(source))
    for source in sorted(sources):
        hasher.update(source.read_bytes())
    for name, tensor in itertools.chain(model.named_parameters(), model.named_buffers()):
        tensor = tensor.detach().cpu().contiguous()
        hasher.update(f"{name} {tensor.dtype} {tuple(tensor.shape)}".encode())
        hasher.update(tensor.view(-1).view(torch.uint8).numpy().tobytes() if tensor.numel() else b"")
    return hasher.hexdigest()


def cached_graph(model: torch.nn.Module, example: torch.Tensor, folder: Path,
                 export: Callable[[torch.nn.Module, torch.Tensor, Path], Path]) -> Path:
    """The ONNX file of `model`: the cached one when it is intact, else `export(model, example, folder)`, kept in
    the cache for the next run. The file returned may be read, never changed."""
    key, cache = graph_key(model, example), kind_folder("engines")
    cached = read_named(cache, key, ".onnx", lambda entry, _: entry)
    if cached is not None:
        return cached
    path = export(model, example, folder)
    write_named(cache, key, ".onnx", path.read_bytes())
    return path
