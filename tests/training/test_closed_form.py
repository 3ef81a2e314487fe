"""A linear head's step with its gradients written out (training/closed_form.py) trains exactly as autograd does,
and is taken only where it applies."""
from types import SimpleNamespace

import pytest
import torch
from torch import nn

from showdown.device import CPU
from showdown.models.classifier import Head
from showdown.training.batches import cached_train_batches, feature_batches
from showdown.training.closed_form import linear_head_step
from showdown.training.loop import TrainSettings, fit


def _features(rows: int, generator: torch.Generator, width: int = 48, classes: int = 4) -> SimpleNamespace:
    labels = torch.randint(0, classes, (rows,), generator=generator)
    values = torch.randn(rows, width, generator=generator)
    values[torch.arange(rows), labels] += 2  # something to learn
    return SimpleNamespace(features=values, labels=labels, indices=torch.arange(rows), on_disk=False)


def _fit(model: nn.Module, smoothing: float, optimizer: str) -> list[dict]:
    generator = torch.Generator().manual_seed(0)
    train, val = _features(300, generator), _features(90, generator)
    noise = 0.1 * torch.randn(train.features.shape, generator=generator)
    mirrored = SimpleNamespace(**{**vars(train), "features": train.features + noise})  # the flipped images' features
    settings = TrainSettings(epochs=6, lr=0.03, patience=6, label_smoothing=smoothing, optimizer=optimizer, seed=3)
    return fit(model, cached_train_batches({"train": train, "train_mirrored": mirrored}, 32, seed=3),
               feature_batches(val, 64), settings)


@pytest.mark.parametrize("dropout,smoothing,optimizer", [(0.2, 0.1, "adamw"), (0.0, 0.0, "sgd"), (0.5, 0.0, "adam")])
def test_the_written_out_step_trains_as_autograd_does(dropout, smoothing, optimizer):
    torch.manual_seed(0)
    head = Head(48, 4, dropout=dropout)
    through_autograd = nn.Sequential(Head(48, 4, dropout=dropout))  # not a Head: the step is not taken
    through_autograd[0].load_state_dict(head.state_dict())
    assert linear_head_step(head, nn.CrossEntropyLoss(label_smoothing=smoothing), CPU, "fp32", False) is not None
    ours, theirs = _fit(head, smoothing, optimizer), _fit(through_autograd, smoothing, optimizer)
    for mine, reference in zip(ours, theirs, strict=True):
        for key in ("train_loss", "train_acc", "val_loss", "val_acc"):
            assert mine[key] == pytest.approx(reference[key], abs=1e-5), key
    for name, value in head.state_dict().items():
        torch.testing.assert_close(value, through_autograd[0].state_dict()[name], atol=1e-5, rtol=1e-5)
    assert ours[-1]["val_acc"] > 0.5  # it learned


def test_autograd_where_the_step_does_not_apply():
    loss = nn.CrossEntropyLoss()
    assert linear_head_step(Head(8, 3, hidden=[4]), loss, CPU, "fp32", False) is None  # hidden layers
    assert linear_head_step(Head(8, 3), nn.CrossEntropyLoss(weight=torch.ones(3)), CPU, "fp32", False) is None
    assert linear_head_step(Head(8, 3), loss, CPU, "fp32", True) is None  # mixup's soft targets
    assert linear_head_step(Head(8, 3), loss, CPU, "bf16", False) is None
    assert linear_head_step(Head(8, 3), loss, torch.device("meta"), "fp32", False) is None
    assert linear_head_step(Head(8, 3, dropout=1e-6), loss, CPU, "fp32", False)(
        torch.randn(2, 8), torch.tensor([0, 1])) is None  # a drop probability that rounds to 0: torch's dropout
