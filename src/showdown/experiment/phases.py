"""The training phases of an entry, in the order they run, then its evaluation.

`head`: the frozen backbone runs once per image (feature cache) and the new head trains on the features.
`finetune`: one pass of the frozen bottom over the images gives boundary activations; the frozen top turns them
into the head phase's features, then the unfrozen top trains on them and is tested on them. Where the bottom
cannot be cached, the head phase trains on cached features and fine-tuning runs the whole network on images.
`scratch` / `scratch-cnn`: every layer trains from random init, on decoded images.
"""
from __future__ import annotations

import dataclasses
import os
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import nn

from showdown import distributed
from showdown.config.run_config import RunConfig
from showdown.config.strategy import DEFAULT_UNFREEZE
from showdown.device import module_device, one_thread, small_steps, to_device
from showdown.errors import DiskError
from showdown.experiment.boundary_store import DiskViews, disk_folder
from showdown.experiment.context import Entry, RunContext
from showdown.fileio import readable_size
from showdown.frozen.boundary import TopOfNetwork, first_trainable, sequential_layers
from showdown.frozen.feature_cache import Features, extract_views, forward_views
from showdown.precision import autocast
from showdown.training.batches import cached_train_batches, feature_batches, sharded_batches
from showdown.training.evaluate import predict_proba
from showdown.training.freezing import batchnorms_kept_in_eval, freeze_backbone, lr_param_groups, unfreeze
from showdown.training.loop import TrainSettings

# Augmentations the caches can serve: none, and flip (each image and its mirror image computed once).
CACHEABLE_AUGMENTS = ("none", "flip")


@dataclass
class Trained:
    history: list[dict]
    features: dict | None = None  # cached features per split, while the backbone stayed as loaded
    failed: list[str] = field(default_factory=list)  # unreadable image files that were skipped
    top: nn.Module | None = None  # a fine-tuned top that is evaluated on `activations` ...
    activations: dict | None = None  # ... the frozen bottom's outputs per split


def train(entry: Entry) -> Trained:
    """The entry's phases for its strategy."""
    if entry.strategy.finetunes:
        return train_finetune(entry)
    if entry.strategy.frozen_backbone:
        return train_head(entry)
    for param in entry.model.parameters():  # from random init every layer trains, batch norm included
        param.requires_grad_(True)
    settings = dataclasses.replace(train_settings(entry.config), precision=entry.run.precision)
    return Trained(entry.fit(entry.model, entry.images("train", train=True), entry.images("val"), settings,
                             str(entry.strategy), parallel=True))


def train_settings(config: RunConfig, precision: str = "fp32") -> TrainSettings:
    return TrainSettings(
        epochs=config.epochs, lr=config.lr, optimizer=config.optimizer, weight_decay=config.weight_decay,
        momentum=config.momentum, patience=config.patience, schedule=config.schedule,
        label_smoothing=config.label_smoothing, precision=precision, grad_clip=config.grad_clip, seed=config.seed,
        mixup=config.augment == "strong", compile=config.compile,
    )


def train_head(entry: Entry, features: dict | None = None) -> Trained:
    """Phase `head`: the frozen backbone runs once per image (cached) unless augmentation needs every epoch.
    `features` given are used as they are."""
    config, model, timing = entry.config, entry.model, entry.timing
    freeze_backbone(model)
    settings = train_settings(config)
    start = time.perf_counter()
    if config.augment in CACHEABLE_AUGMENTS:
        if features is None:
            features = extract_all(entry)
            timing.feature_seconds = time.perf_counter() - start
            timing.feature_cache_hit = all(f.cache_hit for f in features.values())
        # Trains in seconds on the cached features: every process trains it alike, no data parallelism needed.
        with one_thread(module_device(model.head), when=small_steps(model.head, config.batch_size)):
            history = entry.fit(model.head, cached_train_batches(features, config.batch_size, config.seed),
                                feature_batches(features["val"], 1024), settings, "head")
        trained = Trained(history, features, [path for f in features.values() for path in f.failed])
    else:
        entry.run.echo(f"  feature cache off: augmentation '{config.augment}' changes the inputs every epoch")
        trained = Trained(entry.fit(model, entry.images("train", train=True), entry.images("val"),
                                    dataclasses.replace(settings, precision=entry.run.precision), "head",
                                    keep_eval=batchnorms_kept_in_eval(model), parallel=True))
    timing.head_seconds = time.perf_counter() - start + entry.earlier_seconds.get("head", 0.0)
    return trained


def extract_all(entry: Entry) -> dict:
    """Cached features per split; with `--augment flip` also "train_mirrored", the mirror images' features, and
    with `--tta flip` "test_mirrored". Only the dataset's splits are read: a search's dataset has no test split.
    The splits are extracted in one pass (feature_cache.extract_views)."""
    splits = entry.dataset.splits
    views = [(split, False) for split in splits]
    views += [("train", True)] if entry.config.augment == "flip" else []
    views += [("test", True)] if entry.config.tta == "flip" and "test" in splits else []
    if entry.pool is not None:
        features = {view: entry.pool.subset(splits[view[0]], view[1]) for view in views}
    else:
        features = extract_views(entry.run.frozen, entry.backbone, splits, views)
    return {f"{split}_mirrored" if mirror else split: f for (split, mirror), f in features.items()}


def train_finetune(entry: Entry) -> Trained:
    """Strategy `finetune`: the head phase, then the unfrozen top with the head at a lower learning rate."""
    cut = boundary_cut(entry)
    if cut is None:
        return _finetune_on_images(entry)
    layers, index, folder = cut
    start = time.perf_counter()
    try:
        activations = boundary_activations(entry, nn.Sequential(*layers[:index]), folder)
    except DiskError as exc:  # the disk filled up after all (another process wrote to it): the slow path
        entry.run.echo(f"  boundary cache off: {exc}; full forward")
        return _finetune_on_images(entry)
    top = TopOfNetwork(layers[index:], entry.backbone.model, entry.model.head)
    features = {name: frozen_top_features(top, acts, entry.run.precision) for name, acts in activations.items()}
    entry.timing.feature_seconds = time.perf_counter() - start
    entry.timing.feature_cache_hit = all(view.cache_hit for view in activations.values())  # on disk, from before
    trained = train_head(entry, features)
    config = entry.config
    shift = config.activation_shift
    if shift and activations["train"].features.dim() != 4:
        entry.run.echo("  --activation-shift ignored: the cached activations are tokens, not maps with cells to shift")
        shift = 0
    trained.history += train_top(entry, top, cached_train_batches(activations, config.batch_size, config.seed,
                                                                  shift=shift, split=True),
                                 sharded_batches(activations["val"], config.batch_size))
    return dataclasses.replace(trained, features=None, top=top, activations=activations)


def _finetune_on_images(entry: Entry) -> Trained:
    """The head on cached features, then fine-tuning runs the whole network on images."""
    if entry.config.activation_shift:
        entry.run.echo("  --activation-shift ignored: it shifts cached boundary activations, and there are none")
    trained = train_head(entry)
    trained.history += train_top(entry, entry.model, entry.images("train", train=True), entry.images("val"))
    trained.features = None  # the backbone changed: evaluate on images
    return trained


def train_top(entry: Entry, net: nn.Module, train_batches, val_batches) -> list[dict]:
    """Phase `finetune`: the unfrozen top of the backbone and the head train at a lower learning rate, on
    boundary activations (`net` a TopOfNetwork) or on images (`net` the whole model)."""
    config, model = entry.config, entry.model
    depth = config.unfreeze or DEFAULT_UNFREEZE
    trained = unfreeze(model, depth)
    settings = dataclasses.replace(train_settings(config, top_precision(entry.run, on_images=net is model)),
                                   lr=config.lr * config.ft_lr_factor, epochs=config.ft_epochs or config.epochs)
    groups = lr_param_groups(model, settings.lr, config.lr_decay)
    keep_eval = batchnorms_kept_in_eval(model, config.train_bn)
    entry.run.echo(f"  finetune: {len(trained)} backbone tensors unfrozen ({depth}), lr {settings.lr:g}")
    start = time.perf_counter()
    history = entry.fit(net, train_batches, val_batches, settings, "finetune", params=groups, keep_eval=keep_eval,
                        keep_start=True, parallel=True)
    entry.timing.finetune_seconds = time.perf_counter() - start + entry.earlier_seconds.get("finetune", 0.0)
    return history


def top_precision(run: RunContext, on_images: bool) -> str:
    """The precision the unfrozen top trains in: the run's autocast with decoded images in the training step, and
    on a GPU (tensor cores) with boundary activations too; on the CPU, on activations, fp32, which trained
    faster there (measured, docs/performance.md)."""
    return run.precision if on_images or run.device.type != "cpu" else "fp32"


def boundary_cut(entry: Entry) -> tuple[list[nn.Module], int, Path | None] | None:
    """(the backbone's layers as a chain, index of the first one fine-tuning trains, the folder the activations are
    kept in when they do not fit the RAM budget, None for RAM) when the frozen bottom below it can be cached, else
    None (said in one line). The model is left with only its head trainable."""
    config, backbone, echo = entry.config, entry.backbone, entry.run.echo
    if config.augment not in CACHEABLE_AUGMENTS:
        echo(f"  boundary cache off: augmentation '{config.augment}' changes the inputs every epoch; full forward")
        return None
    layers = sequential_layers(backbone.model, backbone.preprocessing.input_size)
    unfreeze(entry.model, config.unfreeze or DEFAULT_UNFREEZE)
    cut = first_trainable(layers) if layers else 0
    freeze_backbone(entry.model)
    if not cut:
        echo("  boundary cache off: nothing frozen below the trainable layers, or no sequential split; full forward")
        return None
    with torch.inference_mode():
        probe = torch.zeros(1, *backbone.preprocessing.input_size, device=entry.run.device)
        values = nn.Sequential(*layers[:cut])(probe).numel()
    need, budget = _cache_need(entry, values), cache_budget(config)
    frozen = f"frozen bottom ({cut} of {len(layers)} layers) runs once"
    if distributed.all_true(need <= budget):  # machines of a run may differ in RAM: every rank decides alike
        echo(f"  boundary cache: {frozen}, {readable_size(need)}")
        return layers, cut, None
    each = f" of each of {distributed.local_processes()} processes" if distributed.local_processes() > 1 else ""
    over = f"{readable_size(need)} of activations exceed the {readable_size(budget)} budget{each} (--cache-budget-gb)"
    frozen_pass = entry.run.frozen
    folder, why_not = disk_folder(frozen_pass.cache_dir, need, config.boundary_disk, frozen_pass.cache_writable)
    if folder is None:
        echo(f"  boundary cache off: {over}{why_not}; full forward")
        return None
    echo(f"  boundary cache on disk: {readable_size(need)} at {folder} ({over}); {frozen}")
    return layers, cut, folder


def _cache_need(entry: Entry, values: int) -> int:
    """Bytes of boundary activations a process holds (`values` per image): every view of every split; under
    torchrun, while the shards of a view are joined, also the shards as they arrived: one more of the largest."""
    views = [len(entry.dataset.splits[split]) * values * _stored(split).itemsize
             for split, mirrors in _boundary_passes(entry).items() for _ in mirrors]
    return sum(views) + (max(views) if distributed.active() else 0)


def cache_budget(config: RunConfig) -> float:
    """Bytes a process may hold in boundary activations: --cache-budget-gb (default a quarter of RAM) is the
    machine's, shared by the processes torchrun started on it (each holds the whole set)."""
    machine = config.cache_budget_gb * 2**30 if config.cache_budget_gb else _ram_bytes() / 4
    return machine / distributed.local_processes()


def _boundary_passes(entry: Entry) -> dict[str, tuple[bool, ...]]:
    """Split -> the views of its images the boundary activations are needed for: the images themselves, and their
    mirror images for flip augmentation (train) and flip TTA (test)."""
    flips = {"train": entry.config.augment == "flip", "test": entry.config.tta == "flip"}
    return {split: (False, True) if flips.get(split) else (False,) for split in entry.dataset.splits}


def boundary_activations(entry: Entry, bottom: nn.Module, folder: Path | None = None) -> dict:
    """The frozen bottom's outputs by split, and by "<split>_mirrored" for the mirror images: one pass over the
    images, the only time an image is decoded. With `folder`, memory-mapped files there (boundary_store.py),
    read back when an earlier run left them intact."""
    activations = {}
    stored = DiskViews(entry, bottom, folder) if folder is not None else None
    for split, mirrors in _boundary_passes(entry).items():
        found = stored.cached(split, mirrors, _stored(split)) if stored else None
        if found is not None:
            activations.update(zip((split, f"{split}_mirrored"), found))
            continue
        sinks = stored.writers(split, mirrors, _stored(split)) if stored else None
        try:
            views = forward_views(entry.run.frozen, bottom, entry.backbone.preprocessing, entry.dataset.splits[split],
                                  mirrors, desc=f"boundary {split}", store_dtype=_stored(split), sinks=sinks,
                                  name=f"the frozen bottom of {entry.backbone.spec.name}",
                                  calibration=entry.dataset.splits.get("train"))  # int8: every split's calibration
            views = [sink.seal(view) for sink, view in zip(sinks, views)] if sinks else views
        finally:
            for sink in sinks or ():
                sink.drop()  # a sealed file is in place already: only an unfinished one goes
        activations.update(zip((split, f"{split}_mirrored"), views))
    return activations


def _stored(split: str) -> torch.dtype:
    """Training and validation activations are kept in bf16 (half the memory; the loss curves match, see
    test_speed_paths.py); the test split's in fp32, so its scores are what the saved model predicts."""
    return torch.float32 if split == "test" else torch.bfloat16


def frozen_top_features(top: TopOfNetwork, activations: Features, precision: str) -> Features:
    """The pooled features the whole frozen backbone gives, computed from boundary activations by the top as
    loaded (still frozen): the head phase's inputs without a second pass over the images."""
    pooled = TopOfNetwork(list(top.layers), top.backbone, nn.Identity()).eval()
    device = module_device(top)
    chunks = []
    with torch.inference_mode(), autocast(precision, device.type):
        for batch in activations.features.split(256):
            chunks.append(pooled(to_device(batch, device)).float().cpu())
    features = torch.cat(chunks) if chunks else torch.empty(0)
    return dataclasses.replace(activations, features=features, on_disk=False)  # pooled, in RAM


def _ram_bytes() -> int:
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")


def evaluate(entry: Entry, trained: Trained):
    """(test probabilities, true labels, test items that were readable): from cached features when the backbone
    is unchanged, from boundary activations when only the top above them changed, else from the images."""
    if trained.features is not None:
        probs, y_true = predict_proba(WithTTA(entry.model.head), _test_batches(trained.features, 1024))
        kept = trained.features["test"].indices.tolist()
    elif trained.activations is not None:
        probs, y_true = predict_proba(WithTTA(trained.top), _test_batches(trained.activations, entry.config.batch_size))
        kept = trained.activations["test"].indices.tolist()
    else:  # each process predicts its shard of the test images; joined in order, one row per readable image
        batches = entry.images("test")
        shards = distributed.gather((*predict_proba(entry.model, batches, entry.run.precision), batches.readable))
        probs = np.concatenate([p for p, _, _ in shards if len(p)])
        y_true = np.concatenate([y for _, y, _ in shards])
        kept = [i for _, _, readable in shards for i in readable]  # recorded in that pass: decoded once
    return probs, y_true, [entry.dataset.splits["test"][i] for i in kept]


class WithTTA(nn.Module):
    """A network on cached tensors (the head on features, the top on boundary activations), averaging the logits
    of each test image and of its mirror image when both are given: what ImageClassifier(tta="flip") computes
    from the images."""

    def __init__(self, net: nn.Module):
        super().__init__()
        self.net = net

    def forward(self, inputs):
        if isinstance(inputs, tuple):
            return (self.net(inputs[0]) + self.net(inputs[1])) / 2
        return self.net(inputs)


def _test_batches(cached: dict, batch_size: int):
    test = feature_batches(cached["test"], batch_size)
    if "test_mirrored" not in cached:
        return test
    mirrored = feature_batches(cached["test_mirrored"], batch_size)
    return (((x, x_mirrored), y) for (x, y), (x_mirrored, _) in zip(test, mirrored))  # one pass, no copies kept
