"""Freeze plans: which parameters train, at which learning rate, and which batch norms keep ImageNet statistics.

`blocks:K` counts timm's coarse layer groups (stem, stages, ...) from the top, so it means the same thing on
every architecture; `layers:N` counts parameterised layers (Conv, BatchNorm, Linear) from the top, the way
Keras users count `base_model.layers[-N:]`.
"""
from __future__ import annotations

from timm.models import group_parameters
from torch import nn

from showdown.config.strategy import parse_unfreeze
from showdown.errors import ConfigError
from showdown.models.classifier import ImageClassifier


def freeze_backbone(model: ImageClassifier) -> None:
    """Strategy `head`: only the new head learns."""
    for param in model.backbone.parameters():
        param.requires_grad_(False)
    for param in model.head.parameters():
        param.requires_grad_(True)


def layer_groups(backbone: nn.Module) -> list[list[str]]:
    """Parameter names of the backbone's coarse layer groups, bottom to top. A top group of norms alone (ConvNeXt's
    head.norm) belongs to the stage below it, as a ViT's final norm does to its last block: `blocks:1` trains a
    stage, not two norm tensors."""
    grouped = group_parameters(backbone, backbone.group_matcher(coarse=True))
    groups = [list(names) for _, names in sorted(grouped.items())]
    while len(groups) > 1 and all(isinstance(_owner(backbone, name), _NORMS) for name in groups[-1]):
        groups[-2] += groups.pop()
    return groups


_NORMS = (nn.LayerNorm, nn.GroupNorm, nn.modules.batchnorm._BatchNorm)  # timm's norms derive from these


def _owner(backbone: nn.Module, param: str) -> nn.Module:
    return backbone.get_submodule(param.rpartition(".")[0])


def parameterised_layers(backbone: nn.Module) -> list[str]:
    """Names of modules holding parameters of their own, in registration (= forward) order."""
    return [name for name, module in backbone.named_modules() if any(True for _ in module.parameters(recurse=False))]


def unfreeze(model: ImageClassifier, spec: str) -> list[str]:
    """Make the chosen top part of the backbone trainable (the head always is); returns those parameter names.

    A count beyond what the backbone has is a ConfigError that says how many it has (only known once the model is).
    """
    kind, count = parse_unfreeze(spec)
    names = [name for name, _ in model.backbone.named_parameters()]
    if kind == "blocks":
        groups = layer_groups(model.backbone)
        _check_count(model, spec, count, len(groups), "layer groups", "blocks")
        chosen = {n for group in groups[-count:] for n in group}
    elif kind == "layers":
        layers = parameterised_layers(model.backbone)
        _check_count(model, spec, count, len(layers), "parameterised layers", "layers")
        top = set(layers[-count:])  # each layer's own parameters: the root's too (a ViT's cls_token, pos_embed)
        chosen = {n for n in names if n.rpartition(".")[0] in top}
    else:
        chosen = set(names)
    freeze_backbone(model)
    params = dict(model.backbone.named_parameters())
    for name in chosen:
        params[name].requires_grad_(True)
    return [n for n in names if n in chosen]


def _check_count(model: ImageClassifier, spec: str, count: int, available: int, what: str, kind: str) -> None:
    if count > available:
        arch = getattr(model.backbone, "pretrained_cfg", None) or {}
        name = arch.get("architecture") or type(model.backbone).__name__
        raise ConfigError(f"--unfreeze {spec}: the backbone ({name}) has only {available} {what}; "
                          f"use {kind}:1 to {kind}:{available}, or all")


def lr_param_groups(model: ImageClassifier, lr: float, decay: float | None) -> list[dict]:
    """Optimizer groups: the head at `lr`; backbone groups at lr * decay**depth from the top when decay is set."""
    groups = [{"params": [p for p in model.head.parameters() if p.requires_grad], "lr": lr}]
    params = dict(model.backbone.named_parameters())
    for depth, names in enumerate(reversed(layer_groups(model.backbone)), start=1):
        trainable = [params[n] for n in names if params[n].requires_grad]
        if trainable:
            groups.append({"params": trainable, "lr": lr * (decay ** depth if decay else 1.0)})
    return groups


def batchnorms_kept_in_eval(model: nn.Module, train_bn: bool = False) -> list[nn.Module]:
    """Backbone BN layers that must not update running statistics while the rest trains.

    A BN layer in inference mode keeps its ImageNet statistics; updating them from small batches of a new
    dataset is one of the classic ways fine-tuning goes wrong. With --train-bn only frozen ones are kept.
    """
    root = model.backbone if isinstance(model, ImageClassifier) else model
    kept = []
    for module in root.modules():
        if isinstance(module, nn.modules.batchnorm._BatchNorm):
            trainable = any(p.requires_grad for p in module.parameters(recurse=False))
            if not (train_bn and trainable):
                kept.append(module)
    return kept
