"""Multi-stage features: the final pooled features plus the globally averaged outputs of earlier stages.

The final features of an ImageNet network are tuned to ImageNet's classes; the middle stages carry more
generic shapes and textures, which transfer better to images far from ImageNet (CIFAR's 32 px thumbnails:
+2 to 2.5 points for a linear probe on EfficientNet-Lite0 on a subset, docs/performance.md). `--pool-stages K` puts the
pooled outputs of the last K stages before the final features in front of them. The backbone stays frozen
and its weights unchanged; only what the head sees grows.
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
