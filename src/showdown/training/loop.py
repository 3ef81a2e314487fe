"""One training loop for every strategy: seeded, early stopping on validation loss, best weights restored."""
from __future__ import annotations

import math
import time
from dataclasses import dataclass

import numpy as np
import torch
from timm.data import Mixup
from timm.loss import SoftTargetCrossEntropy
from torch import nn

from showdown.precision import autocast
from showdown.training.checkpoint import load_checkpoint, save_checkpoint


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
    seed: int = 0
    mixup: bool = False  # mixup/cutmix on image batches (the `strong` augmentation)


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
              grad_clip: float | None = None, mix=None):
    """Mean loss and accuracy over one pass; trains when an optimizer is given.

    `mix` (a timm Mixup) blends pairs of training images, and `loss_fn` then takes its soft targets.
    """
    total_loss, correct, seen = 0.0, 0, 0
    for inputs, targets in batches:
        if optimizer is not None:
            soft = targets
            if mix is not None and len(targets) % 2 == 0:  # timm mixes pairs: an odd last batch stays unmixed
                inputs, soft = mix(inputs, targets)
            elif mix is not None:
                soft = nn.functional.one_hot(targets, mix.num_classes).float()
            with autocast(precision):
                logits = model(inputs)
            loss = loss_fn(logits.float(), soft)
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


def seed_epoch(seed: int, epoch: int) -> None:
    """Every epoch starts from its own seed, so shuffling, dropout and mixing of epoch N do not depend on the
    epochs before it: a resumed run repeats an uninterrupted one exactly."""
    torch.manual_seed(seed * 100_003 + epoch)
    np.random.seed((seed * 100_003 + epoch) % 2**32)


def _loss_functions(settings: TrainSettings, class_weights, num_classes: int | None):
    if settings.mixup and num_classes:
        # Mixup applies the label smoothing itself; SoftTargetCrossEntropy takes its soft targets.
        mix = Mixup(mixup_alpha=0.8, cutmix_alpha=1.0, label_smoothing=settings.label_smoothing,
                    num_classes=num_classes)
        return SoftTargetCrossEntropy(), mix
    return nn.CrossEntropyLoss(weight=class_weights, label_smoothing=settings.label_smoothing), None


def _snapshot(model: nn.Module) -> dict:
    """What early stopping restores: the trainable parameters and every buffer (BN statistics)."""
    state = {n: t.detach().clone() for n, t in model.named_parameters() if t.requires_grad}
    return state | {n: b.clone() for n, b in model.named_buffers()}


def fit(model: nn.Module, train_batches, val_batches, settings: TrainSettings, *, phase: str = "head",
        params=None, class_weights: torch.Tensor | None = None, keep_eval: list[nn.Module] = (),
        checkpoint=None, num_classes: int | None = None, keep_start: bool = False, on_epoch=None) -> list[dict]:
    """Train `model` in place and restore its best-validation-loss weights; returns the epoch history.

    `train_batches` / `val_batches` are re-iterable sources of (inputs, targets); `params` are parameters or
    optimizer groups (default: every parameter that requires grad); `keep_eval` modules (frozen batch norms)
    stay in inference mode while the rest trains. With `checkpoint` (a path), the state after every epoch is
    saved there and an existing checkpoint is resumed from. With `keep_start` the weights as they come in count
    as the first candidate (a fine-tuning phase that never beats the head it starts from gives that head back).
    `on_epoch(best_val_loss)` is called after every epoch (a hyper-parameter search prunes a trial from it).
    """
    params = [p for p in model.parameters() if p.requires_grad] if params is None else params
    optimizer = make_optimizer(params, settings)
    scheduler, per_batch = make_scheduler(optimizer, settings, len(train_batches))
    train_loss_fn, mix = _loss_functions(settings, class_weights, num_classes)
    val_loss_fn = nn.CrossEntropyLoss()
    state = {"epoch": 0, "best_loss": math.inf, "best_state": None, "since_best": 0, "history": [], "done": False}
    if checkpoint is not None and checkpoint.is_file():
        state = load_checkpoint(checkpoint, model, optimizer, scheduler)
    elif keep_start:
        model.eval()
        state["best_loss"], _ = run_epoch(model, val_batches, val_loss_fn, precision=settings.precision)
        state["best_state"] = _snapshot(model)
    best_loss, best_state, since_best = state["best_loss"], state["best_state"], state["since_best"]
    history = state["history"]
    for epoch in range(state["epoch"] + 1, settings.epochs + 1):
        if state["done"]:
            break
        seed_epoch(settings.seed, epoch)
        start = time.perf_counter()
        model.train()
        for module in keep_eval:
            module.eval()
        lr = optimizer.param_groups[0]["lr"]
        train_loss, train_acc = run_epoch(model, train_batches, train_loss_fn, optimizer,
                                          scheduler if per_batch else None, settings.precision, settings.grad_clip,
                                          mix)
        model.eval()
        val_loss, val_acc = run_epoch(model, val_batches, val_loss_fn, precision=settings.precision)
        if not per_batch:
            scheduler.step(val_loss) if settings.schedule == "plateau" else scheduler.step()
        history.append({"phase": phase, "epoch": epoch, "lr": lr, "train_loss": train_loss, "train_acc": train_acc,
                        "val_loss": val_loss, "val_acc": val_acc, "seconds": time.perf_counter() - start})
        if val_loss < best_loss - 1e-4:
            best_loss, since_best = val_loss, 0
            best_state = _snapshot(model)
        else:
            since_best += 1
        stop = since_best >= settings.patience
        if checkpoint is not None:
            save_checkpoint(checkpoint, model, optimizer, scheduler, {
                "epoch": epoch, "best_loss": best_loss, "best_state": best_state, "since_best": since_best,
                "history": history, "done": stop})
        if on_epoch is not None:
            on_epoch(best_loss)
        if stop:
            break
    if best_state is not None:
        model.load_state_dict(best_state, strict=False)
    model.eval()
    return history
