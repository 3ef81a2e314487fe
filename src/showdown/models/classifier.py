"""The new classifier on top of a backbone, and the two put together as one model."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

LEVELS = 256  # an 8-bit draw: the resolution of the drop probability


class Dropout(nn.Dropout):
    """nn.Dropout whose CPU mask takes eight 8-bit draws from each 64-bit random number. torch's CPU dropout draws a
    Bernoulli per element: 0.70 ms for a (64 x 1280) batch on one thread of the 2-core box, a third of a linear head's
    step on cached features; this mask took 0.29 ms with 16-bit draws and 0.1 ms less with 8-bit ones (loops of
    1,000-4,000 calls in one process; `python benchmarks/head_epochs.py` times the whole fit). An element is dropped
    with probability round(p * 256) / 256 (0.2 -> 0.199, 0.1 -> 0.102: within 0.002 of p) and the kept ones are
    scaled by the inverse of the exact share kept, so what a layer receives keeps its expected value. Draws come
    from torch's generator, so seeding repeats them. Other devices, TorchScript, and a p that 8 bits miss by more
    than a tenth of itself (below about 0.02, or within that of 1) use torch's own dropout."""

    def forward(self, inputs: torch.Tensor) -> torch.Tensor:
        if torch.jit.is_scripting() or not self.training or inputs.device.type != "cpu":
            return F.dropout(inputs, self.p, self.training, self.inplace)
        return self._masked(inputs)

    @torch.jit.unused
    def _masked(self, inputs: torch.Tensor) -> torch.Tensor:
        drawn = self.kept(inputs)
        if drawn is None:
            return F.dropout(inputs, self.p, self.training, self.inplace)
        kept, scale = drawn
        return inputs * kept.mul_(scale)

    @torch.jit.unused
    def kept(self, inputs: torch.Tensor) -> tuple[torch.Tensor, float] | None:
        """(1 where an element of `inputs` is kept and 0 where it is dropped, in its shape and dtype; the factor the
        kept ones are scaled by), drawn as this dropout draws them; None where p rounds to 0 or 1 (torch's own
        dropout then)."""
        cut = round(self.p * LEVELS)
        if not 0 < cut < LEVELS or abs(cut / LEVELS - self.p) > 0.1 * self.p:  # a small p, poorly approximated
            return None
        words = -(-inputs.numel() // 8)  # int64 numbers holding one 8-bit draw per element
        draws = torch.randint(-2**63, 2**63 - 1, (words,), dtype=torch.int64, device=inputs.device).view(torch.int8)
        # int8 draws are uniform over [-128, 127]: `cut` of the 256 values lie below cut - 128, and draw - cut + 129
        # is 1 or more for the others. In floats, as a comparison's bool mask costs 3x more to make and to apply.
        mask = draws[:inputs.numel()].view(inputs.shape).to(inputs.dtype).sub_(cut - LEVELS // 2 - 1).clamp_(0, 1)
        return mask, LEVELS / (LEVELS - cut)


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
                layers.append(Dropout(dropout))
            layers.append(nn.Linear(width, size))
            if batch_norm:
                layers.append(nn.BatchNorm1d(size))
            layers.append(nn.ReLU(inplace=True))
            width = size
        if dropout:
            layers.append(Dropout(dropout))
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
