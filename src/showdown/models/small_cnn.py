"""The from-scratch baseline people compare transfer learning against: a small plain CNN."""
from __future__ import annotations

from torch import nn

from showdown.config.strategy import SMALL_CNN_MODEL
from showdown.data.preprocessing import Preprocessing
from showdown.models.backbones import Backbone, BackboneSpec
from showdown.models.backbones.found import RANDOM_SCRATCH

SCRATCH_CNN_SIZE = 96  # small inputs keep a from-scratch CNN trainable on a CPU


class SmallCNN(nn.Module):
    """Four conv-BN-ReLU-maxpool blocks (32-64-128-256 channels) and global average pooling."""

    def __init__(self, widths=(32, 64, 128, 256)):
        super().__init__()
        layers, channels = [], 3
        for width in widths:
            layers += [nn.Conv2d(channels, width, 3, padding=1, bias=False), nn.BatchNorm2d(width),
                       nn.ReLU(inplace=True), nn.MaxPool2d(2)]
            channels = width
        self.features = nn.Sequential(*layers)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.num_features = channels

    def forward(self, x):
        return self.pool(self.features(x)).flatten(1)


def small_cnn_backbone(image_size: int | None) -> Backbone:
    size = image_size or SCRATCH_CNN_SIZE
    preprocessing = Preprocessing((3, size, size), interpolation="bilinear", crop_pct=1.0)
    return Backbone(BackboneSpec(SMALL_CNN_MODEL, SMALL_CNN_MODEL), SmallCNN(), RANDOM_SCRATCH, preprocessing, {})
