"""The new classifier on top of a backbone, and the two put together as one model."""
from __future__ import annotations

import torch
from torch import nn


class Head(nn.Module):
    """Pooled features -> optional hidden layers (Linear, BatchNorm, ReLU) -> linear classifier.

    Dropout, when set, comes before every Linear, as in the usual Keras transfer-learning heads.
    """

    def __init__(self, in_features: int, num_classes: int, hidden: list[int] = (), dropout: float = 0.0,
                 batch_norm: bool = False):
        super().__init__()
        layers: list[nn.Module] = []
        width = in_features
        for size in hidden:
            if dropout:
                layers.append(nn.Dropout(dropout))
            layers.append(nn.Linear(width, size))
            if batch_norm:
                layers.append(nn.BatchNorm1d(size))
            layers.append(nn.ReLU(inplace=True))
            width = size
        if dropout:
            layers.append(nn.Dropout(dropout))
        layers.append(nn.Linear(width, num_classes))
        self.layers = nn.Sequential(*layers)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return self.layers(features)


class ImageClassifier(nn.Module):
    """Backbone (outputs globally pooled features) followed by the head.

    With tta="flip" an evaluating model averages the logits of each image and of its mirror image (test-time
    augmentation); it is part of the model, so evaluation, `showdown predict` and exported files agree.
    """

    def __init__(self, backbone: nn.Module, head: Head, tta: str = "none"):
        super().__init__()
        self.backbone = backbone
        self.head = head
        self.tta = tta

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        logits = self.head(self.backbone(images))
        if self.tta == "flip" and not self.training:
            logits = (logits + self.head(self.backbone(images.flip(-1)))) / 2
        return logits
