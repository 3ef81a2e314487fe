"""The training phases of an entry, in the order they run, then its evaluation.

`head`: the frozen backbone runs once per image (feature cache) and the new head trains on the features.
`finetune`: the head phase, then the unfrozen top trains on cached boundary activations of the frozen bottom.
`scratch` / `scratch-cnn`: every layer trains from random init, on decoded images.
"""
from __future__ import annotations

import dataclasses
import os
import time
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import nn

from showdown import distributed
from showdown.config.run_config import RunConfig
from showdown.experiment.context import Entry
from showdown.frozen.boundary import TopOfNetwork, first_trainable, sequential_layers
from showdown.frozen.feature_cache import FEATURE_BATCH, extract_features, forward_frozen
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


def train(entry: Entry) -> Trained:
    """The entry's phases for its strategy."""
    if entry.base_strategy in ("head", "finetune"):
        trained = train_head(entry)
        if entry.base_strategy == "finetune":
            trained.history += train_top(entry)
            trained.features = None  # the backbone changed: evaluate on images
        return trained
    for param in entry.model.parameters():  # from random init every layer trains, batch norm included
        param.requires_grad_(True)
    settings = dataclasses.replace(train_settings(entry.config), precision=entry.run.precision)
    return Trained(entry.fit(entry.model, entry.images("train", train=True), entry.images("val"), settings,
                             entry.strategy, parallel=True))


def train_settings(config: RunConfig, precision: str = "fp32") -> TrainSettings:
    return TrainSettings(
        epochs=config.epochs, lr=config.lr, optimizer=config.optimizer, weight_decay=config.weight_decay,
        momentum=config.momentum, patience=config.patience, schedule=config.schedule,
        label_smoothing=config.label_smoothing, precision=precision, grad_clip=config.grad_clip, seed=config.seed,
        mixup=config.augment == "strong", compile=config.compile,
    )


def train_head(entry: Entry) -> Trained:
    """Phase `head`: the frozen backbone runs once per image (cached) unless augmentation needs every epoch."""
    config, model, timing = entry.config, entry.model, entry.timing
    freeze_backbone(model)
    settings = train_settings(config)
    start = time.perf_counter()
    if config.augment in CACHEABLE_AUGMENTS:
        features = extract_all(entry)
        timing["feature_seconds"] = time.perf_counter() - start
        timing["feature_cache_hit"] = all(f.cache_hit for f in features.values())
        # Trains in seconds on the cached features: every process trains it alike, no data parallelism needed.
        history = entry.fit(model.head, cached_train_batches(features, config.batch_size, config.seed),
                            feature_batches(features["val"], 1024), settings, "head")
        trained = Trained(history, features, [path for f in features.values() for path in f.failed])
    else:
        entry.run.echo(f"  feature cache off: augmentation '{config.augment}' changes the inputs every epoch")
        trained = Trained(entry.fit(model, entry.images("train", train=True), entry.images("val"),
                                    dataclasses.replace(settings, precision=entry.run.precision), "head",
                                    keep_eval=batchnorms_kept_in_eval(model), parallel=True))
    timing["head_seconds"] = time.perf_counter() - start
    return trained


def extract_all(entry: Entry) -> dict:
    """Cached features per split; with `--augment flip` also "train_mirrored", the mirror images' features, and
    with `--tta flip` "test_mirrored". Only the dataset's splits are read: a search's dataset has no test split."""
    def extract(split: str, mirror: bool = False):
        if entry.pool is not None:
            return entry.pool.subset(entry.dataset.splits[split], mirror)
        return extract_features(entry.backbone, entry.dataset.splits[split], precision=entry.run.precision,
                                batch_size=FEATURE_BATCH, workers=entry.config.worker_count,
                                cache_dir=entry.run.cache_dir, desc=f"{entry.backbone.spec.name} {split}",
                                runtime=entry.run.runtime, mirror=mirror, device=entry.run.device)

    features = {split: extract(split) for split in entry.dataset.splits}
    if entry.config.augment == "flip":
        features["train_mirrored"] = extract("train", mirror=True)
    if entry.config.tta == "flip" and "test" in entry.dataset.splits:
        features["test_mirrored"] = extract("test", mirror=True)
    return features


def train_top(entry: Entry) -> list[dict]:
    """Phase `finetune`: the unfrozen top of the backbone and the head train at a lower learning rate."""
    config, model = entry.config, entry.model
    trained = unfreeze(model, config.unfreeze)
    settings = dataclasses.replace(train_settings(config), lr=config.lr * config.ft_lr_factor,
                                   epochs=config.ft_epochs or config.epochs)
    groups = lr_param_groups(model, settings.lr, config.lr_decay)
    keep_eval = batchnorms_kept_in_eval(model, config.train_bn)
    entry.run.echo(f"  finetune: {len(trained)} backbone tensors unfrozen ({config.unfreeze}), lr {settings.lr:g}")
    start = time.perf_counter()
    top = boundary_top(entry)
    if top is not None:
        net, batches = top
        history = entry.fit(net, cached_train_batches(batches, config.batch_size, config.seed, split=True),
                            sharded_batches(batches["val"], config.batch_size), settings, "finetune",
                            params=groups, keep_eval=keep_eval, keep_start=True, parallel=True)
    else:
        history = entry.fit(model, entry.images("train", train=True), entry.images("val"),
                            dataclasses.replace(settings, precision=entry.run.precision), "finetune", params=groups,
                            keep_eval=keep_eval, keep_start=True, parallel=True)
    entry.timing["finetune_seconds"] = time.perf_counter() - start
    return history


def boundary_top(entry: Entry):
    """(top network, boundary activations per split) when the frozen bottom can be cached, else None."""
    config, backbone, echo = entry.config, entry.backbone, entry.run.echo
    if config.augment not in CACHEABLE_AUGMENTS:
        echo(f"  boundary cache off: augmentation '{config.augment}' changes the inputs every epoch; full forward")
        return None
    layers = sequential_layers(backbone.model, backbone.preprocessing.input_size)
    cut = first_trainable(layers) if layers else 0
    if not cut:
        echo("  boundary cache off: nothing frozen below the trainable layers, or no sequential split; full forward")
        return None
    bottom = nn.Sequential(*layers[:cut])
    with torch.inference_mode():
        probe = torch.zeros(1, *backbone.preprocessing.input_size, device=entry.run.device)
        per_image = bottom(probe).numel() * 2  # bf16 bytes
    mirror = config.augment == "flip"
    need = per_image * (sum(len(items) for items in entry.dataset.splits.values())
                        + mirror * len(entry.dataset.splits["train"]))
    budget = (config.cache_budget_gb * 2**30) if config.cache_budget_gb else _ram_bytes() / 4
    if need > budget:
        echo(f"  boundary cache off: {need / 2**30:.1f} GB of activations exceed the {budget / 2**30:.1f} GB budget "
             "(--cache-budget-gb); full forward")
        return None
    echo(f"  boundary cache: frozen bottom ({cut} of {len(layers)} layers) runs once, {need / 2**20:.0f} MB in bf16")

    def activations(split: str, mirror: bool = False):
        return forward_frozen(bottom, backbone.preprocessing, entry.dataset.splits[split],
                              precision=entry.run.precision, batch_size=FEATURE_BATCH, workers=config.worker_count,
                              desc=f"boundary {split}", name=f"the frozen bottom of {backbone.spec.name}",
                              store_dtype=torch.bfloat16, runtime=entry.run.runtime, mirror=mirror,
                              device=entry.run.device)

    batches = {split: activations(split) for split in entry.dataset.splits}
    if mirror:
        batches["train_mirrored"] = activations("train", mirror=True)
    return TopOfNetwork(layers[cut:], backbone.model, entry.model.head), batches


def _ram_bytes() -> int:
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")


def evaluate(entry: Entry, features: dict | None):
    """(test probabilities, true labels, test items that were readable): from cached features when the backbone
    is unchanged, else from the images."""
    if features is not None:
        probs, y_true = predict_proba(HeadWithTTA(entry.model.head), _test_feature_batches(features))
        kept = features["test"].indices.tolist()
    else:  # each process predicts its shard of the test images; joined in order, one row per readable image
        batches = entry.images("test")
        shards = distributed.gather((*predict_proba(entry.model, batches, entry.run.precision), batches.readable))
        probs = np.concatenate([p for p, _, _ in shards if len(p)])
        y_true = np.concatenate([y for _, y, _ in shards])
        kept = [i for _, _, readable in shards for i in readable]  # recorded in that pass: decoded once
    return probs, y_true, [entry.dataset.splits["test"][i] for i in kept]


class HeadWithTTA(nn.Module):
    """The head on cached features, averaging the logits of each test image and of its mirror image when both
    are given: what ImageClassifier(tta="flip") computes from the images."""

    def __init__(self, head: nn.Module):
        super().__init__()
        self.head = head

    def forward(self, features):
        if isinstance(features, tuple):
            return (self.head(features[0]) + self.head(features[1])) / 2
        return self.head(features)


def _test_feature_batches(features: dict):
    test = feature_batches(features["test"], 1024)
    if "test_mirrored" not in features:
        return test
    mirrored = feature_batches(features["test_mirrored"], 1024)
    return (((x, x_mirrored), y) for (x, y), (x_mirrored, _) in zip(test, mirrored))  # one pass, no copies kept
