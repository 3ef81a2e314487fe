"""Import keras.applications weights (MobileNet, MobileNetV2, ResNet50, VGG16, InceptionV3) into timm.

Every Keras layer is placed by its name into the matching module of the Keras-exact timm architecture
(keras_arch.py); a layer with no place, a shape that does not fit, or a timm tensor left unfilled is a
ModelError, so a half-loaded network cannot pass for a trained one. Layouts move from Keras (HWIO
kernels, depthwise HWC1, dense in x out) to PyTorch. Keras's preprocessing travels with the weights.
"""
from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import timm
import torch
from torch import nn

from showdown.errors import ModelError
from showdown.models.backbones import keras_arch
from showdown.models.backbones.found import FoundWeights
from showdown.models.backbones.keras_file import read_keras_weights
from showdown.models.backbones.registry import BackboneSpec


@dataclass(frozen=True)
class Slot:
    target: str  # timm module
    kind: str  # conv | depthwise | bn | linear | conv_to_linear | flatten_to_conv
    bias_into: str = ""  # the Keras BN layer that absorbs this conv's bias (timm's conv has none)


@dataclass(frozen=True)
class Family:
    keras_name: str
    short_name: str  # showdown's short name for this network
    timm_name: str
    default_size: int
    mode: dict  # preprocessing mean/std (keras_arch)
    bgr: bool  # trained on BGR input (Keras 'caffe' mode)


FAMILIES = {f.keras_name: f for f in [
    Family("MobileNet", "mobilenet_v1", "keras_mobilenet", 224, keras_arch.SCALE_TO_ONE, False),
    Family("MobileNetV2", "mobilenet_v2", "keras_mobilenet_v2", 224, keras_arch.SCALE_TO_ONE, False),
    Family("ResNet50", "resnet50", "keras_resnet50", 224, keras_arch.CAFFE, True),
    Family("VGG16", "vgg16", "keras_vgg16", 224, keras_arch.CAFFE, True),
    Family("InceptionV3", "inception_v3", "keras_inception_v3", 299, keras_arch.SCALE_TO_ONE, False),
]}
# timm architectures that are the same network as a family (a user may name them in --models).
_SAME_NETWORK = {"MobileNet": ("mobilenetv1_",), "MobileNetV2": ("mobilenetv2_",), "ResNet50": ("resnet50",),
                 "VGG16": ("vgg16",), "InceptionV3": ("inception_v3",)}

# Input side in Keras's cached names: mobilenet_{alpha}_{size}_tf..., mobilenet_v2_..._{alpha}_{size}...
_SIZE_IN_NAME = re.compile(r"^mobilenet_(?:\d_\d+|v2_weights_tf_dim_ordering_tf_kernels_[\d.]+)_(\d+)[_.]")


def keras_cache_dir() -> Path:
    """Where Keras keeps downloaded weights: $KERAS_HOME/models, else ~/.keras/models."""
    return Path(os.environ.get("KERAS_HOME") or Path.home() / ".keras") / "models"


def import_keras(path: Path, spec: BackboneSpec) -> FoundWeights:
    weights = read_keras_weights(path)
    family = _family(weights.layers, path)
    prefixes = _SAME_NETWORK[family.keras_name]
    if spec.name != family.short_name and not spec.timm_name.startswith((family.timm_name, *prefixes)):
        raise ModelError(f"{path.name} holds Keras {family.keras_name} weights, not {spec.name}: "
                         f"use it with --models {family.short_name}")
    kwargs = _architecture_kwargs(family, weights.layers)
    model = timm.create_model(family.timm_name, pretrained=False, **kwargs)
    state = _place(weights.layers, _slots(family, model, weights.layers), model, path.name)
    if family.bgr:  # Keras feeds these networks BGR: reading RGB instead means reversing the first conv's inputs
        first = model.pretrained_cfg["first_conv"] + ".weight"
        state[first] = state[first].flip(1).contiguous()
    match = _SIZE_IN_NAME.match(path.name)
    side = weights.input_size or (int(match.group(1)) if match else family.default_size)
    preprocessing = {**family.mode, "input_size": (3, side, side), "interpolation": "bilinear", "crop_pct": 0.875,
                     "crop_mode": "center"}
    return FoundWeights(state, preprocessing, kwargs, timm_name=family.timm_name)


def _family(layers: dict, path: Path) -> Family:
    names = set(layers)
    if "conv_dw_1" in names:
        return FAMILIES["MobileNet"]
    if names & {"block_1_expand", "expanded_conv_depthwise"}:
        return FAMILIES["MobileNetV2"]
    if names & {"conv2_block1_1_conv", "res2a_branch2a"}:
        return FAMILIES["ResNet50"]
    if "block1_conv1" in names:
        return FAMILIES["VGG16"]
    if any(re.fullmatch(r"conv2d(_\d+)?", n) for n in names):
        return FAMILIES["InceptionV3"]
    raise ModelError(f"{path.name} is not a keras.applications MobileNet, MobileNetV2, ResNet50, VGG16 or "
                     f"InceptionV3 weights file (its layers: {', '.join(sorted(names)[:4])}, ...)")


def _classifier(layers: dict) -> str | None:
    return next((n for n in ("predictions", "Logits", "conv_preds", "fc1000") if n in layers), None)


def _architecture_kwargs(family: Family, layers: dict) -> dict:
    top = _classifier(layers)
    kwargs = {"num_classes": int(layers[top]["kernel"].shape[-1]) if top else 0}
    if family.keras_name == "MobileNet":  # conv_pw_13 has 1024 * alpha filters
        kwargs["alpha"] = _width(layers, "conv_pw_13", 1024)
    elif family.keras_name == "MobileNetV2":  # block_16_project has 320 * alpha
        kwargs["alpha"] = _width(layers, "block_16_project", 320)
    elif family.keras_name == "VGG16" and "fc1" in layers:
        kwargs["include_top"] = True
    return kwargs


def _width(layers: dict, layer: str, full: int) -> float:
    if layer not in layers:
        raise ModelError(f"the Keras weights lack layer '{layer}', which every such network has")
    return round(layers[layer]["kernel"].shape[-1] / full, 4)


def _slots(family: Family, model: nn.Module, layers: dict) -> dict[str, Slot]:
    slots = {"MobileNet": _mobilenet, "MobileNetV2": _mobilenet_v2, "ResNet50": _resnet50,
             "VGG16": _vgg16, "InceptionV3": _inception_v3}[family.keras_name](model, layers)
    top = _classifier(layers)
    if top:
        head = model.pretrained_cfg["classifier"]
        slots[top] = Slot(head, "conv_to_linear" if top == "conv_preds" else "linear")
    return slots


def _flat_blocks(model: nn.Module) -> list[str]:
    return [f"blocks.{s}.{i}" for s, stage in enumerate(model.blocks) for i in range(len(stage))]


def _mobilenet(model, layers) -> dict[str, Slot]:
    slots = {"conv1": Slot("conv_stem", "conv"), "conv1_bn": Slot("bn1", "bn")}
    for i, block in enumerate(_flat_blocks(model), start=1):
        slots |= {f"conv_dw_{i}": Slot(f"{block}.conv_dw", "depthwise"), f"conv_dw_{i}_bn": Slot(f"{block}.bn1", "bn"),
                  f"conv_pw_{i}": Slot(f"{block}.conv_pw", "conv"), f"conv_pw_{i}_bn": Slot(f"{block}.bn2", "bn")}
    return slots


def _mobilenet_v2(model, layers) -> dict[str, Slot]:
    first, *rest = _flat_blocks(model)
    slots = {"Conv1": Slot("conv_stem", "conv"), "bn_Conv1": Slot("bn1", "bn"),
             "expanded_conv_depthwise": Slot(f"{first}.conv_dw", "depthwise"),
             "expanded_conv_depthwise_BN": Slot(f"{first}.bn1", "bn"),
             "expanded_conv_project": Slot(f"{first}.conv_pw", "conv"),
             "expanded_conv_project_BN": Slot(f"{first}.bn2", "bn"),
             "Conv_1": Slot("conv_head", "conv"), "Conv_1_bn": Slot("bn2", "bn")}
    for i, block in enumerate(rest, start=1):
        for keras, timm_conv, timm_bn, kind in (("expand", "conv_pw", "bn1", "conv"),
                                                 ("depthwise", "conv_dw", "bn2", "depthwise"),
                                                 ("project", "conv_pwl", "bn3", "conv")):
            slots[f"block_{i}_{keras}"] = Slot(f"{block}.{timm_conv}", kind)
            slots[f"block_{i}_{keras}_BN"] = Slot(f"{block}.{timm_bn}", "bn")
    return slots


def _resnet50(model, layers) -> dict[str, Slot]:
    # Current Keras names (conv2_block1_1_conv) and those of Keras 2.0-2.2 files (res2a_branch2a).
    slots = {"conv1_conv": Slot("conv1", "conv", "conv1_bn"), "conv1_bn": Slot("bn1", "bn"),
             "conv1": Slot("conv1", "conv", "bn_conv1"), "bn_conv1": Slot("bn1", "bn")}
    for stage, depth in zip(range(2, 6), (3, 4, 6, 3)):
        for b in range(depth):
            target, new, old = f"layer{stage - 1}.{b}", f"conv{stage}_block{b + 1}", f"{stage}{'abcdef'[b]}"
            parts = [("1", "a", "conv1", "bn1"), ("2", "b", "conv2", "bn2"), ("3", "c", "conv3", "bn3")]
            if b == 0:
                parts.append(("0", None, "downsample.0", "downsample.1"))
            for k, letter, conv, bn in parts:
                old_branch = f"branch2{letter}" if letter else "branch1"
                slots[f"{new}_{k}_conv"] = Slot(f"{target}.{conv}", "conv", f"{new}_{k}_bn")
                slots[f"{new}_{k}_bn"] = Slot(f"{target}.{bn}", "bn")
                slots[f"res{old}_{old_branch}"] = Slot(f"{target}.{conv}", "conv", f"bn{old}_{old_branch}")
                slots[f"bn{old}_{old_branch}"] = Slot(f"{target}.{bn}", "bn")
    return slots


def _vgg16(model, layers) -> dict[str, Slot]:
    convs = [name for name, m in model.features.named_children() if isinstance(m, nn.Conv2d)]
    keras = [f"block{b}_conv{c}" for b, n in enumerate((2, 2, 3, 3, 3), start=1) for c in range(1, n + 1)]
    slots = {k: Slot(f"features.{t}", "conv") for k, t in zip(keras, convs)}
    slots |= {"fc1": Slot("pre_logits.fc1", "flatten_to_conv"), "fc2": Slot("pre_logits.fc2", "flatten_to_conv")}
    return slots


def _inception_v3(model, layers) -> dict[str, Slot]:
    """Keras names InceptionV3's layers by a counter (conv2d_7, batch_normalization_7): the counter gives
    the order in which Keras built them, which is the order timm declares its ConvNormAct blocks in."""
    def by_counter(prefix):
        found = [n for n in layers if re.fullmatch(rf"{prefix}(_\d+)?", n)]
        return sorted(found, key=lambda n: int(n.rsplit("_", 1)[1]) if n[len(prefix):] else 0)

    blocks = [name for name, m in model.named_modules() if isinstance(m, timm.layers.ConvNormAct)]
    slots = {}
    for conv, bn, block in zip(by_counter("conv2d"), by_counter("batch_normalization"), blocks):
        slots[conv], slots[bn] = Slot(f"{block}.conv", "conv"), Slot(f"{block}.bn", "bn")
    return slots


def _place(layers: dict, slots: dict[str, Slot], model: nn.Module, filename: str) -> dict[str, torch.Tensor]:
    target = {k: v for k, v in model.state_dict().items() if not k.endswith("num_batches_tracked")}
    state: dict[str, torch.Tensor] = {}
    folded: dict[str, np.ndarray] = {}  # Keras BN layer -> conv bias to subtract from its moving mean

    def put(key: str, array: np.ndarray, keras_layer: str) -> None:
        if key not in target:
            raise ModelError(f"{filename}: Keras layer '{keras_layer}' has no place '{key}' in the timm model")
        if tuple(target[key].shape) != array.shape:
            raise ModelError(f"{filename}: Keras layer '{keras_layer}' has shape {array.shape}, "
                             f"the timm model expects {tuple(target[key].shape)} at '{key}'")
        state[key] = torch.from_numpy(np.ascontiguousarray(array, dtype=np.float32))

    for name, variables in layers.items():
        slot = slots.get(name)
        if slot is None:
            raise ModelError(f"{filename}: cannot place Keras layer '{name}' in the timm model "
                             "(not part of this keras.applications network)")
        unknown = set(variables) - {"kernel", "bias", "gamma", "beta", "moving_mean", "moving_variance"}
        if unknown:
            raise ModelError(f"{filename}: Keras layer '{name}' has unknown variables {sorted(unknown)}")
        if slot.kind == "bn":
            channels = variables["moving_mean"].shape[0]
            put(f"{slot.target}.weight", variables.get("gamma", np.ones(channels)), name)  # scale=False: 1
            put(f"{slot.target}.bias", variables.get("beta", np.zeros(channels)), name)
            put(f"{slot.target}.running_mean", variables["moving_mean"], name)
            put(f"{slot.target}.running_var", variables["moving_variance"], name)
            continue
        shape = tuple(target[f"{slot.target}.weight"].shape) if f"{slot.target}.weight" in target else ()
        put(f"{slot.target}.weight", _kernel(variables["kernel"], slot.kind, shape), name)
        if "bias" in variables:
            if f"{slot.target}.bias" in target:
                put(f"{slot.target}.bias", variables["bias"], name)
            elif slot.bias_into:  # BN(Wx + b) equals BN with its mean lowered by b
                folded[slot.bias_into] = variables["bias"]
            else:
                raise ModelError(f"{filename}: Keras layer '{name}' has a bias the timm model has no place for")
    for bn_layer, bias in folded.items():
        key = f"{slots[bn_layer].target}.running_mean"
        if key not in state:
            raise ModelError(f"{filename}: the bias of the convolution before '{bn_layer}' has no batch norm "
                             "to go into")
        state[key] = state[key] - torch.from_numpy(bias)
    missing = sorted(set(target) - set(state))
    if missing:
        raise ModelError(f"{filename}: the Keras weights leave {len(missing)} tensors of the timm model unfilled, "
                         f"e.g. '{missing[0]}' (a truncated file, or another network)")
    return state


def _kernel(kernel: np.ndarray, kind: str, shape: tuple) -> np.ndarray:
    if kind == "conv":  # HWIO -> OIHW
        return kernel.transpose(3, 2, 0, 1)
    if kind == "depthwise":  # H, W, C, multiplier -> C * multiplier, 1, H, W
        h, w, c, m = kernel.shape
        return kernel.transpose(2, 3, 0, 1).reshape(c * m, 1, h, w)
    if kind == "linear":  # in x out -> out x in
        return kernel.T
    if kind == "conv_to_linear":  # MobileNet's 1x1 conv_preds
        return kernel.reshape(-1, kernel.shape[-1]).T
    if kind == "flatten_to_conv":  # VGG's dense layers over a flattened (H, W, C) map, as timm's convs
        if len(shape) == 4 and kernel.size == np.prod(shape):
            out, channels, h, w = shape
            return kernel.reshape(h, w, channels, out).transpose(3, 2, 0, 1)
        return kernel  # put() reports the mismatch
    raise AssertionError(kind)
