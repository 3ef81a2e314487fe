"""Split a frozen-bottom network at its first trainable layer, so the frozen part runs once per image.

With part of the backbone unfrozen and no augmentation, everything below the first trainable layer gives the
same output every epoch: its activations are computed once (stored in bf16) and only the top trains on them.
The split is a sequential view of the timm model's feature layers, checked against `forward_features` on a
test input; models whose forward is not such a chain simply train with the full forward. A vision transformer
adds its position embedding and class (and register) tokens in a method, not a module: its embedding steps
become one module (`TokenStem`), so the chain is the stem, the transformer blocks and the final norm, and the
top trains on cached tokens.
"""
from __future__ import annotations

import torch
from torch import nn

from showdown.device import module_device
from showdown.models.backbones.stages import is_vision_transformer

# Containers whose children run one after another in timm's forward_features.
_CHAINS = (nn.Sequential, nn.ModuleList)
_HEAD_PARTS = {"global_pool", "classifier", "fc", "head", "head_drop", "pre_logits", "drop", "fc_norm", "attn_pool"}


class TokenStem(nn.Module):
    """A timm ViT's steps before its blocks as one module: patch embedding, position embedding with the class and
    register tokens (the model's `_pos_embed` method), patch dropout, pre-norm. The embedding parameters are
    registered here too (shared, not copied), so an unfrozen embedding makes the stem trainable."""

    def __init__(self, vit: nn.Module):
        super().__init__()
        self.patch_embed, self.patch_drop, self.norm_pre = vit.patch_embed, vit.patch_drop, vit.norm_pre
        for name in ("pos_embed", "cls_token", "reg_token"):
            if getattr(vit, name, None) is not None:
                setattr(self, name, getattr(vit, name))
        object.__setattr__(self, "_vit", vit)  # for its method only: the whole model is no submodule of its stem

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.norm_pre(self.patch_drop(self._vit._pos_embed(self.patch_embed(images))))


def _token_chain(backbone: nn.Module) -> list[nn.Module] | None:
    return [TokenStem(backbone), *backbone.blocks, backbone.norm] if is_vision_transformer(backbone) else None


def sequential_layers(backbone: nn.Module, input_size: tuple[int, int, int]) -> list[nn.Module] | None:
    """The feature layers as a flat chain equal to backbone.forward_features, or None."""
    layers: list[nn.Module] = _token_chain(backbone) or []

    def flatten(module: nn.Module, depth: int) -> None:
        if isinstance(module, _CHAINS) and depth < 2:
            for child in module.children():
                flatten(child, depth + 1)
        else:
            layers.append(module)

    for name, child in backbone.named_children() if not layers else ():
        if name not in _HEAD_PARTS:
            flatten(child, 0)
    was_training = backbone.training
    backbone.eval()
    try:
        with torch.inference_mode():
            # On the backbone's device. The backbone's own forward is outside the `except` below: a failure there
            # (a probe on the wrong device) is a fault to see, not a network that is "not a plain chain".
            x = torch.randn(1, *input_size, device=module_device(backbone))
            expected = backbone.forward_features(x)
            try:
                for layer in layers:
                    x = layer(x)
            except Exception:  # any failure of the chain means "not a plain chain"
                return None
            ok = x.shape == expected.shape and torch.allclose(x, expected, atol=1e-5)
    finally:
        backbone.train(was_training)
    return layers if ok else None


def first_trainable(layers: list[nn.Module]) -> int:
    for index, layer in enumerate(layers):
        if any(p.requires_grad for p in layer.parameters()):
            return index
    return len(layers)


class TopOfNetwork(nn.Module):
    """The trainable top: remaining feature layers, the backbone's pooling, then the head."""

    # oneDNN trains these convolutions ~1.5x faster on channels-last inputs than on the stored NCHW ones
    # (benchmarks/top_training.py, docs/performance.md)
    memory_format = torch.channels_last

    def __init__(self, layers: list[nn.Module], backbone: nn.Module, head: nn.Module):
        super().__init__()
        self.layers = nn.Sequential(*layers)
        self.backbone = backbone  # for forward_head (pooling); its parameters are shared, not copied
        self.head = head

    def forward(self, activations: torch.Tensor) -> torch.Tensor:
        activations = activations.float()
        if activations.dim() == 4:  # maps; a transformer's tokens (N, tokens, dim) have no channels-last form
            activations = activations.contiguous(memory_format=self.memory_format)
        features = self.layers(activations)
        return self.head(self.backbone.forward_head(features, pre_logits=True))
