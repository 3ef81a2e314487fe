"""timm architectures that compute exactly what `keras.applications` computes, registered with timm.

Keras's networks differ from timm's nearest ones in details that change every output: TF 'same' padding
(MobileNets), batch-norm epsilons (1e-3, 1.001e-5), ResNet50's stride in the first 1x1 convolution (the
original Caffe ResNet, timm's resnet50 strides in the 3x3), VGG16 without its fully connected top, and
InceptionV3's 'same' average pooling, which leaves the padding out of the mean. Each function below builds
timm's own model and changes only that, so freezing by blocks, pooled stages and export behave as for
any timm model. Registering them makes `timm.create_model(name, **kwargs)` rebuild a saved model anywhere.
Only the widths Keras publishes are supported where timm rounds channels to multiples of 8 (MobileNet).
"""
from __future__ import annotations

from functools import partial

import torch
import torch.nn.functional as F
from timm.layers import ClassifierHead, ConvNormAct
from timm.models import register_model
from timm.models._builder import build_model_with_cfg
from timm.models.efficientnet import _gen_mobilenet_v1, _gen_mobilenet_v2
from timm.models.inception_v3 import _create_inception_v3
from timm.models.resnet import Bottleneck, ResNet
from timm.models.vgg import VGG
from timm.models.vgg import cfgs as vgg_cfgs
from torch import nn

# What Keras feeds these networks, in timm's terms ((pixel / 255 - mean) / std). Caffe-mode networks
# (ResNet50, VGG16) subtract the ImageNet means in 0..255 from BGR pixels; the importer reverses their
# first convolution's input channels, so these models read RGB like every other backbone.
SCALE_TO_ONE = {"mean": (0.5, 0.5, 0.5), "std": (0.5, 0.5, 0.5)}  # x / 127.5 - 1
CAFFE = {"mean": (123.68 / 255, 116.779 / 255, 103.939 / 255), "std": (1 / 255,) * 3}


def _cfg(size: int, first_conv: str, classifier: str, mode: dict) -> dict:
    return {"num_classes": 1000, "input_size": (3, size, size), "crop_pct": 0.875, "interpolation": "bilinear",
            "first_conv": first_conv, "classifier": classifier, **mode}


# Read by timm's register_model from this module (the architectures' default preprocessing).
default_cfgs = {
    "keras_mobilenet": _cfg(224, "conv_stem", "classifier", SCALE_TO_ONE),
    "keras_mobilenet_v2": _cfg(224, "conv_stem", "classifier", SCALE_TO_ONE),
    "keras_resnet50": _cfg(224, "conv1", "fc", CAFFE),
    "keras_vgg16": _cfg(224, "features.0", "head.fc", CAFFE),
    "keras_inception_v3": _cfg(299, "Conv2d_1a_3x3.conv", "fc", SCALE_TO_ONE),
}
_KERAS_BN_EPS = 1e-3  # keras.layers.BatchNormalization's default


@register_model
def keras_mobilenet(pretrained: bool = False, alpha: float = 1.0, **kwargs):
    """keras.applications.MobileNet (v1): ReLU6, TF 'same' padding, no head convolution."""
    return _gen_mobilenet_v1("keras_mobilenet", alpha, pretrained=pretrained, pad_type="same",
                             bn_eps=_KERAS_BN_EPS, **kwargs)


@register_model
def keras_mobilenet_v2(pretrained: bool = False, alpha: float = 1.0, **kwargs):
    """keras.applications.MobileNetV2; like Keras, the 1280-channel head widens only for alpha > 1."""
    return _gen_mobilenet_v2("keras_mobilenet_v2", alpha, pretrained=pretrained, pad_type="same",
                             bn_eps=_KERAS_BN_EPS, **kwargs)


@register_model
def keras_resnet50(pretrained: bool = False, **kwargs):
    """keras.applications.ResNet50: the stride of each downsampling block sits in its first 1x1 conv."""
    model = build_model_with_cfg(ResNet, "keras_resnet50", pretrained, block=Bottleneck, layers=(3, 4, 6, 3),
                                 norm_layer=partial(nn.BatchNorm2d, eps=1.001e-5), **kwargs)
    for stage in (model.layer2, model.layer3, model.layer4):
        first = stage[0]
        first.conv1.stride, first.conv2.stride = first.conv2.stride, first.conv1.stride
    return model


@register_model
def keras_vgg16(pretrained: bool = False, include_top: bool = False, **kwargs):
    """keras.applications.VGG16; without its top (fc1, fc2) the pooled features are block5_pool's 512."""
    model = build_model_with_cfg(VGG, "keras_vgg16", pretrained, model_cfg=vgg_cfgs["vgg16"],
                                 feature_cfg=dict(flatten_sequential=True), **kwargs)
    if not include_top:
        model.pre_logits = nn.Identity()
        model.head = ClassifierHead(model.num_features, model.num_classes)
        model.head_hidden_size = model.num_features
    return model


class ExcludePaddingPoolConv(ConvNormAct):
    """The convolution after InceptionV3's 3x3 'same' average pooling. timm's blocks average over the zero
    padding too; Keras (TensorFlow) averages only the pixels inside the image. Dividing by the pooled mean
    of ones turns the first into the second (exactly: both are sums over the same window)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        inside = F.avg_pool2d(torch.ones_like(x[:, :1]), kernel_size=3, stride=1, padding=1)
        return super().forward(x / inside)


@register_model
def keras_inception_v3(pretrained: bool = False, **kwargs):
    """keras.applications.InceptionV3 (its batch norms have no scale: the importer sets it to one)."""
    model = _create_inception_v3("keras_inception_v3", pretrained=pretrained, **kwargs)
    for name in ("Mixed_5b", "Mixed_5c", "Mixed_5d", "Mixed_6b", "Mixed_6c", "Mixed_6d", "Mixed_6e",
                 "Mixed_7b", "Mixed_7c"):
        # Same parameters and state-dict keys, only the forward changes.
        model.get_submodule(name).branch_pool.__class__ = ExcludePaddingPoolConv
    return model
