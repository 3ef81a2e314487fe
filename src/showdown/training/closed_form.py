"""The gradients of the commonest training step written out: a linear head, after dropout or not, on cached
features, with cross-entropy (label-smoothed or not), on the CPU in fp32.

At this size autograd's bookkeeping costs more than the arithmetic: the forward, loss and backward of a 64 x 1280
batch into 5 classes took 394 us a step through autograd and 161 us written out (one CPU thread of the 2-core AMD
EPYC Zen 3, loops of 3,000 steps), and a TF-Flowers head trains 1,230 such steps. The gradients are the same to
float rounding (3e-8 apart); `tests/training/test_closed_form.py` fits a head both ways and compares every epoch.
Anything else (hidden layers, class weights, mixing, fp16/bf16, another device, a wrapped or compiled model) goes
through autograd as before.
"""
from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

from showdown.models.classifier import Dropout, Head

# (inputs, targets) -> (logits, loss), the head's .grad set; None where the batch is not one this step takes
Step = Callable[[torch.Tensor, torch.Tensor], "tuple[torch.Tensor, torch.Tensor] | None"]


def linear_head_step(model: nn.Module, loss_fn: nn.Module, device: torch.device, precision: str,
                     mixing: bool) -> Step | None:
    """The written-out step for `model`, or None where autograd must do it. The head's dropout must be showdown's
    (classifier.Dropout), whose mask this step draws the same way."""
    if device.type != "cpu" or precision != "fp32" or mixing or not isinstance(model, Head):
        return None
    *before, linear = model.layers
    if len(before) > 1 or any(not isinstance(m, Dropout) for m in before) or not isinstance(linear, nn.Linear):
        return None
    if linear.bias is None or not (linear.weight.requires_grad and linear.bias.requires_grad):
        return None
    if type(loss_fn) is not nn.CrossEntropyLoss or loss_fn.weight is not None or loss_fn.reduction != "mean":
        return None
    dropout = before[0] if before else None
    smoothing = loss_fn.label_smoothing

    def step(inputs: torch.Tensor, targets: torch.Tensor):
        if inputs.dim() != 2 or inputs.dtype != linear.weight.dtype or targets.dtype != torch.long:
            return None
        kept, scale = inputs, 1.0
        if dropout is not None and dropout.training:
            drawn = dropout.kept(inputs)  # the draws the module's own pass makes
            if drawn is None:
                return None  # a p that rounds to 0 or 1: torch's own dropout, through autograd
            # the dropout's scaling of what it keeps is folded into the product (addmm's alpha)
            kept, scale = inputs * drawn[0], drawn[1]
        with torch.no_grad():
            logits = torch.addmm(linear.bias, kept, linear.weight.t(), alpha=scale)
            log_probs = logits.log_softmax(1)
            # what label smoothing aims at: 1 - smoothing on the label, smoothing spread over every class
            aim = torch.full_like(log_probs, smoothing / log_probs.shape[1])
            aim.scatter_add_(1, targets[:, None], log_probs.new_full((len(targets), 1), 1 - smoothing))
            loss = (aim * log_probs).sum().neg_().div_(len(targets))
            # d loss / d logits = (softmax - aim) / batch
            grad = log_probs.exp_().sub_(aim).div_(len(targets))
            linear.weight.grad = grad.t().mm(kept).mul_(scale)
            linear.bias.grad = grad.sum(0)
        return logits, loss

    return step
