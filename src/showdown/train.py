"""One training loop for every strategy: seeded, early stopping on validation loss, best weights restored."""
from __future__ import annotations

import copy
import math
import time
from dataclasses import dataclass

import torch
from torch import nn

from .precision import autocast


@dataclass
class TrainSettings:
    epochs: int = 30
    lr: float = 1e-3
    optimizer: str = "adamw"
    weight_decay: float = 1e-4
    momentum: float = 0.9
    patience: int = 5
    schedule: str = "plateau"
    label_smoothing: float = 0.0
    precision: str = "fp32"
    grad_clip: float | None = None


def make_optimizer(params, settings: TrainSettings) -> torch.optim.Optimizer:
    if settings.optimizer == "sgd":
        return torch.optim.SGD(params, lr=settings.lr, momentum=settings.momentum, weight_decay=settings.weight_decay)
    if settings.optimizer == "adam":
        return torch.optim.Adam(params, lr=settings.lr, weight_decay=settings.weight_decay)
    return torch.optim.AdamW(params, lr=settings.lr, weight_decay=settings.weight_decay)


def make_scheduler(optimizer, settings: TrainSettings, steps_per_epoch: int):
    """(scheduler, steps per batch?) — plateau and cosine step per epoch, onecycle per batch."""
    if settings.schedule == "cosine":
        return torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=settings.epochs), False
    if settings.schedule == "onecycle":
        max_lr = [group["lr"] for group in optimizer.param_groups]
        return torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=max_lr, epochs=settings.epochs,
                                                   steps_per_epoch=max(1, steps_per_epoch)), True
    patience = max(1, settings.patience // 2)
    return torch.optim.lr_scheduler.ReduceLROnPlateau(optimizer, factor=0.2, patience=patience), False


def run_epoch(model: nn.Module, batches, loss_fn, optimizer=None, scheduler=None, precision: str = "fp32",
              grad_clip: float | None = None):
    """Mean loss and accuracy over one pass; trains when an optimizer is given."""
    total_loss, correct, seen = 0.0, 0, 0
    for inputs, targets in batches:
        if optimizer is not None:
            with autocast(precision):
                logits = model(inputs)
            loss = loss_fn(logits.float(), targets)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            if grad_clip:
                nn.utils.clip_grad_norm_([p for g in optimizer.param_groups for p in g["params"]], grad_clip)
            optimizer.step()
            if scheduler is not None:
                scheduler.step()
        else:
            with torch.inference_mode(), autocast(precision):
                logits = model(inputs).float()
                loss = loss_fn(logits, targets)
        total_loss += float(loss.detach()) * len(targets)
        correct += int((logits.argmax(1) == targets).sum())
        seen += len(targets)
    return total_loss / max(seen, 1), correct / max(seen, 1)


def fit(model: nn.Module, train_batches, val_batches, settings: TrainSettings, *, phase: str = "head",
        params=None, class_weights: torch.Tensor | None = None, keep_eval: list[nn.Module] = ()) -> list[dict]:
    """Train `model` in place and restore its best-validation-loss weights; returns the epoch history.

    `train_batches` / `val_batches` are re-iterable sources of (inputs, targets); `params` are parameters or
    optimizer groups (default: every parameter that requires grad); `keep_eval` modules (frozen batch norms)
    stay in inference mode while the rest trains.
    """
    params = [p for p in model.parameters() if p.requires_grad] if params is None else params
    optimizer = make_optimizer(params, settings)
    scheduler, per_batch = make_scheduler(optimizer, settings, len(train_batches))
    train_loss_fn = nn.CrossEntropyLoss(weight=class_weights, label_smoothing=settings.label_smoothing)
    val_loss_fn = nn.CrossEntropyLoss()
    best_loss, best_state, since_best = math.inf, None, 0
    history = []
    for epoch in range(1, settings.epochs + 1):
        start = time.perf_counter()
        model.train()
        for module in keep_eval:
            module.eval()
        lr = optimizer.param_groups[0]["lr"]
        train_loss, train_acc = run_epoch(model, train_batches, train_loss_fn, optimizer,
                                          scheduler if per_batch else None, settings.precision, settings.grad_clip)
        model.eval()
        val_loss, val_acc = run_epoch(model, val_batches, val_loss_fn, precision=settings.precision)
        if not per_batch:
            scheduler.step(val_loss) if settings.schedule == "plateau" else scheduler.step()
        history.append({"phase": phase, "epoch": epoch, "lr": lr, "train_loss": train_loss, "train_acc": train_acc,
                        "val_loss": val_loss, "val_acc": val_acc, "seconds": time.perf_counter() - start})
        if val_loss < best_loss - 1e-4:
            best_loss, since_best = val_loss, 0
            best_state = copy.deepcopy({n: p for n, p in model.named_parameters() if p.requires_grad}
                                       | {n: b for n, b in model.named_buffers()})
        else:
            since_best += 1
            if since_best >= settings.patience:
                break
    if best_state is not None:
        model.load_state_dict(best_state, strict=False)
    model.eval()
    return history
