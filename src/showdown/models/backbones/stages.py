"""Multi-stage features: the final pooled features plus the globally averaged outputs of earlier stages.

The final features of an ImageNet network are tuned to ImageNet's classes; the middle stages carry more
generic shapes and textures, which transfer better to images far from ImageNet (CIFAR's 32 px thumbnails:
+2 to 2.5 points for a linear probe on EfficientNet-Lite0 on a subset, docs/performance.md). `--pool-stages K` puts the
pooled outputs of the last K stages before the final features in front of them. The backbone stays frozen
and its weights unchanged; only what the head sees grows.

On a vision transformer the strong probe is different (DINOv2's linear evaluation): the class token of each of
the last K blocks, through the final norm, and the mean patch token of the last block (`ClassTokens`).
`pooled(model, K)` picks the one that fits the model.
"""
from __future__ import annotations

import torch
from torch import nn

from showdown.errors import ConfigError


def stage_indices(model: nn.Module, count: int) -> list[int]:
    """timm feature-stage indices of the last `count` stages below the final features."""
    stages = list(model.feature_info)
    if stages and stages[-1]["num_chs"] == model.num_features:
        stages = stages[:-1]  # that stage's output is the final feature map itself (ResNet's layer4)
    if not 0 < count <= len(stages):
        raise ConfigError(f"--pool-stages {count}: this backbone has {len(stages)} stages below its final features")
    return list(range(len(stages) - count, len(stages)))


class PooledStages(nn.Module):
    """A timm model whose output is [pooled stage outputs..., pooled final features] (N, num_features)."""

    def __init__(self, model: nn.Module, count: int):
        super().__init__()
        self.model = model
        self.indices = stage_indices(model, count)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        final, stages = self.model.forward_intermediates(images, indices=self.indices)
        return torch.cat([stage.mean((2, 3)) for stage in stages] + [self.model.forward_head(final)], dim=1)


class ClassTokens(nn.Module):
    """A timm ViT whose output is [class token of each of the last K blocks..., mean patch token of the last]
    (N, (K + 1) * width), each token through the final norm, as DINOv2's linear evaluation takes them."""

    def __init__(self, model: nn.Module, count: int):
        super().__init__()
        depth = len(model.blocks)
        if not 0 < count <= depth:
            raise ConfigError(f"--pool-stages {count}: this transformer has {depth} blocks")
        self.model = model
        self.indices = list(range(depth - count, depth))

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        blocks = self.model.forward_intermediates(images, indices=self.indices, return_prefix_tokens=True, norm=True,
                                                  intermediates_only=True)
        class_tokens = [prefix[:, 0] for _, prefix in blocks]
        return torch.cat(class_tokens + [blocks[-1][0].mean((2, 3))], dim=1)


def is_vision_transformer(model: nn.Module) -> bool:
    """timm's ViT layout: patch embedding, position embedding added by `_pos_embed`, pre-norm, blocks, norm."""
    return all(hasattr(model, part) for part in ("patch_embed", "_pos_embed", "norm_pre", "blocks", "norm"))


def pooled(model: nn.Module, count: int) -> nn.Module:
    """`--pool-stages count` on `model`: class tokens of the last blocks on a ViT that has a class token, pooled
    stages on a CNN."""
    if is_vision_transformer(model) and getattr(model, "cls_token", None) is not None:
        return ClassTokens(model, count)
    return PooledStages(model, count)

