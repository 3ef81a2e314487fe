"""Freeze plans: which parameters train, and which batch-norm layers keep their ImageNet statistics."""
from __future__ import annotations

from torch import nn

from .head import ImageClassifier


def freeze_backbone(model: ImageClassifier) -> None:
    """Strategy `head`: only the new head learns."""
    for param in model.backbone.parameters():
        param.requires_grad_(False)
    for param in model.head.parameters():
        param.requires_grad_(True)


def set_train_mode(model: nn.Module, train_bn: bool = False) -> None:
    """model.train(), except that batch norm in frozen parts stays in inference mode.

    A frozen BN layer that updated its running statistics would still change the network: with small
    batches of a new dataset that is one of the classic ways fine-tuning goes wrong.
    """
    model.train()
    for module in model.modules():
        if isinstance(module, nn.modules.batchnorm._BatchNorm):
            params = list(module.parameters(recurse=False))
            frozen = not params or not any(p.requires_grad for p in params)
            if frozen and not train_bn:
                module.eval()
