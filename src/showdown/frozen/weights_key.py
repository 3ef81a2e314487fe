"""What tells one set of a backbone's weights from another in the cache keys (feature_cache.py,
disk_activations.py)."""
from __future__ import annotations

import zlib

import torch
from torch import nn

from showdown.models.backbones import Backbone


def weights_digest(module: nn.Module) -> str:
    """CRC-32 of a module's layers (its printed tree: a cut after a layer without weights is another module) and
    its parameters and buffers (names, shapes, bytes): a random init or other weights under the same source name
    give other activations."""
    crc = zlib.crc32(repr(module).encode())
    for name, tensor in module.state_dict().items():
        tensor = tensor.detach().cpu().contiguous()
        crc = zlib.crc32(f"{name}|{tensor.dtype}|{tuple(tensor.shape)}".encode(), crc)
        crc = zlib.crc32(tensor.reshape(-1).view(torch.uint8).numpy(), crc)
    return f"{crc:08x}"


def weights_id(backbone: Backbone) -> str:
    """A random init (--no-pretrained, no weights found, scratch) depends on --seed: the digest of its tensors.
    An explicit weights file: its size and mtime (WeightSource.stamp). The other kinds: '', as the feature cache
    has always keyed them, so the caches of pretrained weights stay valid."""
    return backbone.weights.stamp() if backbone.pretrained else weights_digest(backbone.model)
