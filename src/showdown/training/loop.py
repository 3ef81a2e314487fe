"""One training loop for every strategy: seeded, early stopping on validation loss, best weights restored.

Long because it holds the loop and the values it is made of: the settings, a fit's options and state, one pass
over batches, and the model's preparation (data parallel, synchronised batch norm, compile).
"""
from __future__ import annotations

import logging
import math
import random
import time
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, fields
from pathlib import Path

import numpy as np
import torch
from timm.data import Mixup
from timm.loss import SoftTargetCrossEntropy
from torch import nn

from showdown import distributed
from showdown.device import module_device, to_device
from showdown.errors import one_line
from showdown.precision import autocast, grad_scaler
from showdown.training.checkpoint import load_checkpoint, save_checkpoint
from showdown.training.closed_form import Step, linear_head_step

log = logging.getLogger(__name__)


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
    compile: bool = False  # torch.compile the training forward (--compile)


def make_optimizer(params, settings: TrainSettings) -> torch.optim.Optimizer:
    if settings.optimizer == "sgd":
        return torch.optim.SGD(params, lr=settings.lr, momentum=settings.momentum, weight_decay=settings.weight_decay)
    params = list(params)
    fused = _fusable(params)
    if settings.optimizer == "adam":
        return torch.optim.Adam(params, lr=settings.lr, weight_decay=settings.weight_decay, fused=fused)
    return torch.optim.AdamW(params, lr=settings.lr, weight_decay=settings.weight_decay, fused=fused)


def _fusable(params: list) -> bool | None:
    """Fused Adam/AdamW (one kernel per step for all tensors) where PyTorch has them for every parameter: CPU and
    CUDA floating-point tensors (a linear head's 30 epochs on cached features: `benchmarks/head_epochs.py`). None
    leaves the choice to PyTorch, also for groups it cannot look into without using them up (generators)."""
    tensors = []
    for item in params:
        group = item["params"] if isinstance(item, dict) else item
        group = [group] if isinstance(group, torch.Tensor) else group
        if not isinstance(group, (list, tuple)) or not all(isinstance(t, torch.Tensor) for t in group):
            return None
        tensors += group
    fusable = tensors and all(t.device.type in ("cpu", "cuda") and t.is_floating_point() for t in tensors)
    return True if fusable else None


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


@dataclass
class EpochPass:
    """How a pass over batches runs: in `precision`'s autocast, on `device` (default: the model's); with `reduce`
    the totals are summed over the processes of a data-parallel run, so every process sees the same figures."""

    precision: str = "fp32"
    device: torch.device | None = None
    reduce: bool = False


@dataclass
class Optimizing:
    """What a training pass steps after every batch. `scheduler` is one that steps per batch (onecycle); `scaler`
    scales fp16 gradients; `mix` (a timm Mixup) blends pairs of training images, and the loss then takes its soft
    targets. `closed_form` (closed_form.py) computes a linear head's loss and gradients without autograd."""

    optimizer: torch.optim.Optimizer
    scheduler: object | None = None
    scaler: object | None = None
    grad_clip: float | None = None
    mix: Mixup | None = None
    closed_form: Step | None = None


def run_epoch(model, batches, loss_fn, step: Optimizing | None = None, how: EpochPass | None = None):
    """Mean loss and accuracy over one pass; trains when `step` is given. Batches are moved to the pass's device;
    the loss is computed in fp32 from logits."""
    how = how or EpochPass()
    device = how.device or module_device(model)
    scaler = (step.scaler if step else None) or grad_scaler("fp32")
    # Summed on the device (no sync per batch), in float32: MPS has no float64.
    total_loss = torch.zeros((), dtype=torch.float32, device=device)
    correct = torch.zeros((), dtype=torch.long, device=device)
    seen = 0
    for inputs, targets in batches:
        inputs, targets = to_device(inputs, device, channels_last=True), to_device(targets, device)
        if step is not None:
            soft, mix = targets, step.mix
            if mix is not None and len(targets) % 2 == 0:  # timm mixes pairs: an odd last batch stays unmixed
                inputs, soft = mix(inputs, targets)
            elif mix is not None:
                soft = nn.functional.one_hot(targets, mix.num_classes).float()
            done = step.closed_form(inputs, soft) if step.closed_form is not None else None  # sets the gradients
            if done is not None:
                logits, loss = done
            else:
                with autocast(how.precision, device.type):
                    logits = model(inputs)
                loss = loss_fn(logits.float(), soft)
                step.optimizer.zero_grad(set_to_none=True)
                try:
                    scaler.scale(loss).backward()
                except Exception as exc:  # torch.compile builds the backward graph here, at the first backward
                    if not (isinstance(model, _CompiledOrEager) and model.give_up(exc)):
                        raise
                    with autocast(how.precision, device.type):  # the same batch again, eagerly
                        logits = model(inputs)
                    loss = loss_fn(logits.float(), soft)
                    step.optimizer.zero_grad(set_to_none=True)
                    scaler.scale(loss).backward()
            if step.grad_clip:
                scaler.unscale_(step.optimizer)
                nn.utils.clip_grad_norm_([p for g in step.optimizer.param_groups for p in g["params"]],
                                         step.grad_clip)
            scaler.step(step.optimizer)
            scaler.update()
            if step.scheduler is not None:
                step.scheduler.step()
        else:
            with torch.inference_mode(), autocast(how.precision, device.type):
                logits = model(inputs).float()
                loss = loss_fn(logits, targets)
        count = len(targets)
        total_loss += loss.detach() * count
        correct += (logits.argmax(1) == targets).sum()
        seen += count
    totals = [float(total_loss), float(correct), float(seen)]
    if how.reduce:
        totals = distributed.all_sum(totals)
    return totals[0] / max(totals[2], 1), totals[1] / max(totals[2], 1)


def seed_epoch(seed: int, epoch: int, per_process: bool = False) -> None:
    """Every epoch starts from its own seed, so dropout and mixing of epoch N do not depend on the epochs before
    it: a resumed run repeats an uninterrupted one exactly. `per_process` (a data-parallel phase under torchrun):
    each process draws its own dropout masks for its share of the batch (the same masks on every process would
    correlate the shares). A phase every process trains alike draws the same masks everywhere, so every process
    ends with the same weights. The order of the batches comes from the samplers' own seeds, the same on every
    process."""
    offset = 7919 * distributed.rank() if per_process else 0
    torch.manual_seed(seed * 100_003 + epoch + offset)
    np.random.seed((seed * 100_003 + epoch + offset) % 2**32)
    random.seed(seed * 100_003 + epoch + offset)  # RandAugment draws from Python's own generator


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


@dataclass
class FitOptions:
    """What one fit adds to its TrainSettings (fit's keyword arguments).

    `params`: parameters or optimizer groups (default: every parameter that requires grad); `keep_eval` modules
    (frozen batch norms) stay in inference mode while the rest trains. With `checkpoint` (a path), the state after
    every epoch is saved there and an existing checkpoint is resumed from. With `keep_start` the weights as they come
    in count as the first candidate (a fine-tuning phase that never beats the head it starts from gives that head
    back). `on_epoch(best_val_loss, fit_ends)` is called after every epoch (a hyper-parameter search prunes a trial
    from it; `fit_ends`: early stopping or the epoch count ends the fit there).
    `progress(row)` gets each epoch's history row with the early-stopping state (`epochs`, `since_best`,
    `patience`, `stopped`): the run's progress and trackers.

    `parallel`: under torchrun the batches are this process's shares and the model trains as one
    DistributedDataParallel model (gradients averaged, weights identical on every process); losses and
    accuracies are summed over the processes, and after every epoch rank 0's buffers (batch norm statistics, which
    each process updates from its own share) go to all, so every process keeps, restores and evaluates the same
    weights. Only rank 0 writes the checkpoint.
    """

    phase: str = "head"
    params: list | None = None
    class_weights: torch.Tensor | None = None
    keep_eval: Sequence[nn.Module] = ()
    checkpoint: Path | None = None
    num_classes: int | None = None
    keep_start: bool = False
    parallel: bool = False
    on_epoch: Callable[[float, bool], None] | None = None
    progress: Callable[[dict], None] | None = None


@dataclass
class FitState:
    """Where a fit stands after an epoch; a checkpoint holds it as a dict of these keys."""

    epoch: int = 0
    best_loss: float = math.inf
    best_state: dict | None = None  # the best epoch's trainable parameters and buffers (_snapshot)
    since_best: int = 0
    history: list[dict] = field(default_factory=list)
    done: bool = False  # early stopping ended the fit

    def to_dict(self) -> dict:
        return {f.name: getattr(self, f.name) for f in fields(self)}  # not asdict: it would copy every tensor

    @classmethod
    def from_dict(cls, progress: dict) -> FitState:
        return cls(**{f.name: progress[f.name] for f in fields(cls) if f.name in progress})

    def early_stop(self, val_loss: float, model: nn.Module, patience: int) -> bool:
        """Keep the weights of a better validation loss; True once `patience` epochs in a row brought none."""
        if val_loss < self.best_loss - 1e-4:
            self.best_loss, self.since_best, self.best_state = val_loss, 0, _snapshot(model)
        else:
            self.since_best += 1
        return self.since_best >= patience


@dataclass
class _Prepared:
    model: nn.Module  # whose weights are kept and restored (batch norms synchronised under torchrun on CUDA)
    net: Callable  # what the training pass calls: the model, as one DDP model and/or compiled
    keep_eval: Sequence[nn.Module]
    parallel: bool


def _prepare(model: nn.Module, options: FitOptions, settings: TrainSettings, device: torch.device) -> _Prepared:
    """Before the loop, in one step: SyncBatchNorm and DistributedDataParallel under torchrun, torch.compile."""
    parallel, keep_eval = options.parallel and distributed.active(), options.keep_eval
    if parallel:
        model, keep_eval = _sync_batchnorm(model, keep_eval, device)
    # DistributedDataParallel starts by giving every process rank 0's weights: before the starting weights are
    # kept (keep_start), so every process keeps the same ones.
    net = _compiled(_data_parallel(model, device) if parallel else model, settings.compile)
    return _Prepared(model, net, keep_eval, parallel)


def fit(model: nn.Module, train_batches, val_batches, settings: TrainSettings, **options) -> list[dict]:
    """Train `model` in place and restore its best-validation-loss weights; returns the epoch history.

    `train_batches` / `val_batches` are re-iterable sources of (inputs, targets), on the CPU (each batch is moved
    to the model's device); `options` are FitOptions' fields.
    """
    opts = FitOptions(**options)
    device = module_device(model)
    prepared = _prepare(model, opts, settings, device)
    model = prepared.model
    params = [p for p in model.parameters() if p.requires_grad] if opts.params is None else opts.params
    optimizer = make_optimizer(params, settings)
    scheduler, per_batch = make_scheduler(optimizer, settings, len(train_batches))
    scaler = grad_scaler(settings.precision, device.type)
    train_loss_fn, mix = _loss_functions(settings, opts.class_weights, opts.num_classes)
    train_loss_fn, val_loss_fn = train_loss_fn.to(device), nn.CrossEntropyLoss()
    closed_form = linear_head_step(prepared.net, train_loss_fn, device, settings.precision, mix is not None)
    step = Optimizing(optimizer, scheduler if per_batch else None, scaler, settings.grad_clip, mix, closed_form)
    how = EpochPass(settings.precision, device, prepared.parallel)
    state = _start(model, val_batches, opts, how, val_loss_fn, (optimizer, scheduler, scaler))
    for epoch in range(state.epoch + 1, settings.epochs + 1):
        if state.done:
            break
        seed_epoch(settings.seed, epoch, per_process=prepared.parallel)
        if hasattr(train_batches, "set_epoch"):  # the DistributedSampler's order of this epoch
            train_batches.set_epoch(epoch)
        start = time.perf_counter()
        model.train()
        for module in prepared.keep_eval:
            module.eval()
        lr = optimizer.param_groups[0]["lr"]
        train_loss, train_acc = run_epoch(prepared.net, train_batches, train_loss_fn, step, how)
        if prepared.parallel:
            distributed.broadcast_buffers(model)
        model.eval()
        val_loss, val_acc = run_epoch(model, val_batches, val_loss_fn, how=how)
        if not per_batch:
            scheduler.step(val_loss) if settings.schedule == "plateau" else scheduler.step()
        state.history.append({"phase": opts.phase, "epoch": epoch, "lr": lr, "train_loss": train_loss,
                              "train_acc": train_acc, "val_loss": val_loss, "val_acc": val_acc,
                              "seconds": time.perf_counter() - start})
        state.epoch, state.done = epoch, state.early_stop(val_loss, model, settings.patience)
        if opts.checkpoint is not None and distributed.is_main():
            save_checkpoint(opts.checkpoint, model, optimizer, scheduler, scaler, state.to_dict())
        if opts.progress is not None:
            opts.progress({**state.history[-1], "epochs": settings.epochs, "since_best": state.since_best,
                           "patience": settings.patience, "stopped": state.done})
        if opts.on_epoch is not None:
            opts.on_epoch(state.best_loss, state.done or epoch == settings.epochs)
    if state.best_state is not None:
        model.load_state_dict(state.best_state, strict=False)
    model.eval()
    return state.history


def _start(model: nn.Module, val_batches, opts: FitOptions, how: EpochPass, val_loss_fn, restore) -> FitState:
    """The state the loop starts from: a checkpoint's, or a fresh one (the incoming weights first with
    keep_start). `restore`: the optimizer, scheduler and gradient scaler a checkpoint refills."""
    resume = opts.checkpoint is not None and opts.checkpoint.is_file()
    distributed.barrier()  # every process has looked for the checkpoint before rank 0 writes one
    progress = load_checkpoint(opts.checkpoint, model, *restore) if resume else None
    if progress is not None:
        return FitState.from_dict(progress)
    state = FitState()
    if opts.keep_start:
        model.eval()
        state.best_loss, _ = run_epoch(model, val_batches, val_loss_fn, how=how)
        state.best_state = _snapshot(model)
    return state


def _data_parallel(model: nn.Module, device: torch.device) -> nn.Module:
    """The model as one DistributedDataParallel model: rank 0's weights to all, gradients averaged."""
    from torch.nn.parallel import DistributedDataParallel

    # Said by every rank at the first backward of a channels-last network (MobileNetV2's 1x1 head convolution):
    # its weight's and its gradient's strides differ only along dimensions of size 1, the same order in memory.
    warnings.filterwarnings("ignore", message="Grad strides do not match bucket view strides", category=UserWarning)
    return DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)


_notes: set[str] = set()


def _note_once(message: str) -> None:
    if message not in _notes and distributed.is_main():
        _notes.add(message)
        log.warning(message)


def _sync_batchnorm(model: nn.Module, keep_eval, device: torch.device):
    """Batch norm that trains computes its statistics over the global batch (SyncBatchNorm) on CUDA; PyTorch has
    no SyncBatchNorm on the CPU, where each process normalises its own share of the batch."""
    training = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)
                and not any(m is k for k in keep_eval)]
    if not training:
        return model, keep_eval
    if device.type != "cuda":
        _note_once("data parallel on the CPU: batch norm that trains uses each process's share of the batch "
                   "(PyTorch has SyncBatchNorm only on CUDA)")
        return model, keep_eval
    from timm.layers import convert_sync_batchnorm

    kept = {id(m.weight) for m in keep_eval if getattr(m, "weight", None) is not None}
    model = convert_sync_batchnorm(model)  # new modules holding the same parameters: find the kept ones again
    keep = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)
            and getattr(m, "weight", None) is not None and id(m.weight) in kept]
    return model, keep


class _CompiledOrEager:
    """torch.compile of the training forward; where compiling fails, one log line and the eager model."""

    def __init__(self, net):
        self.eager, self.compiled = net, torch.compile(net)

    def __call__(self, inputs):
        if self.compiled is not None:
            try:
                return self.compiled(inputs)
            except Exception as exc:  # any compiler failure only costs speed
                self.give_up(exc)
        return self.eager(inputs)

    def give_up(self, exc: Exception) -> bool:
        """Train eagerly from now on, after `exc` from compiling (the forward, or the backward at the first
        backward pass); False where it already does (then `exc` is not the compiler's)."""
        if self.compiled is None:
            return False
        _note_once(f"--compile: torch.compile failed ({one_line(exc)}); training eagerly")
        self.compiled = None
        return True


def _compiled(net, compile: bool):
    return _CompiledOrEager(net) if compile else net
