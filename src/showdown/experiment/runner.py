"""A showdown: every (backbone, strategy) on one dataset, evaluated on the same test split.

`run(config)` is the Python API; the CLI only parses flags into a RunConfig and calls it.
"""
from __future__ import annotations

import copy
import dataclasses
import json
import logging
import os
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import yaml
from sklearn.utils.class_weight import compute_class_weight
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from showdown.config.run_config import RunConfig
from showdown.data import DatasetSpec, load_dataset
from showdown.data.folder import SPLITS, subset_per_class
from showdown.data.images import eval_transform, image_loader, train_transform
from showdown.data.leakage import check_leakage
from showdown.data.sources import cache_root
from showdown.data.thumbnails import without_centre_crop
from showdown.errors import AccuracyGateError, ConfigError
from showdown.experiment.folds import (
    FOLD_DETAIL_KEYS,
    PROBABILITIES,
    FeaturePool,
    all_items,
    fold_table,
    make_folds,
    write_pooled,
)
from showdown.experiment.run_folder import environment
from showdown.experiment.tuning import describe as describe_search
from showdown.experiment.tuning import tune
from showdown.fileio import new_run_dir, slug, write_atomic, write_csv, write_json
from showdown.frozen.boundary import TopOfNetwork, first_trainable, sequential_layers
from showdown.frozen.engines import resolve_runtime
from showdown.frozen.feature_cache import extract_features, forward_frozen
from showdown.models.backbones import load_backbone, resolve_backbone
from showdown.models.classifier import Head, ImageClassifier
from showdown.models.saving import save_model
from showdown.models.small_cnn import small_cnn_backbone
from showdown.precision import resolve_precision
from showdown.reporting.database import default_db, record_run
from showdown.reporting.plots import plot_confusion, plot_curves
from showdown.reporting.report import report_run
from showdown.reporting.tables import format_markdown, format_table
from showdown.training.evaluate import classification_metrics, predict_proba
from showdown.training.freezing import (
    batchnorms_kept_in_eval,
    freeze_backbone,
    lr_param_groups,
    unfreeze,
)
from showdown.training.loop import TrainSettings, fit

log = logging.getLogger(__name__)
# metrics.json keys that are detail, not summary-row columns
DETAIL_KEYS = ("per_class", "confusion_matrix", "classes", "setup", "tuning", *FOLD_DETAIL_KEYS)
# Measured on the 2-core CPU: batches of 8-16 images run ~1.3x faster than 64 (less memory traffic per step).
FEATURE_BATCH = 16


@dataclass
class Results:
    run_dir: Path
    rows: list[dict]
    skipped: list[str] = field(default_factory=list)

    def table(self) -> str:
        return format_table(self.rows)

    def best(self) -> dict:
        return max(self.rows, key=lambda r: r["accuracy"])


def run(config: RunConfig, *, echo=print, resume: bool = False) -> Results:
    """Train and evaluate every (model, strategy); with `resume`, `config.out` is an interrupted run's folder:
    finished entries are kept and the interrupted one continues from its last completed epoch."""
    config.validate()
    for name in config.models:  # an unknown name fails before any work is done
        resolve_backbone(name)
    dataset = load_dataset(config.data, data_root=config.data_root, split=config.split, seed=config.seed)
    if config.max_per_class:
        dataset = subset_per_class(dataset, config.max_per_class)
    dataset = check_leakage(dataset, drop=config.drop_duplicates)
    precision = resolve_precision(config.precision)
    runtime = resolve_runtime(config.runtime, precision)
    folds = make_folds(dataset, config.folds, config.seed, _val_fraction(config)) if config.folds else None
    run_dir = new_run_dir(config.out, config.name or dataset.name)
    if not resume:
        _record_run(run_dir, config, dataset, precision, runtime, folds)
    counts = dataset.counts()
    if folds:
        echo(f"data: {dataset.name} ({len(dataset.classes)} classes; {sum(counts.values())} images; "
             f"{folds[0].split_source.partition(' of ')[2]})")
    else:
        echo(f"data: {dataset.name} ({len(dataset.classes)} classes; train {counts['train']}, val {counts['val']}, "
             f"test {counts['test']}; split {dataset.split_source})")
    for warning in dataset.warnings:
        echo(f"warning: {warning}")
    cache_dir = Path(config.cache_dir) if config.cache_dir else cache_root() / "features"
    rows, skipped = [], set()
    seeds = [config.seed + r for r in range(config.repeats)]  # the split keeps config.seed: same test images
    for model_name in config.models:
        todo = []
        for strategy in config.strategies:
            if strategy == "scratch-cnn" and model_name != config.models[0]:
                continue  # the small CNN does not depend on the backbone: it runs once
            for seed in seeds:
                done = resume and finished_row(entry_folder(run_dir, model_name, strategy, seed, len(seeds)))
                if done:
                    rows.append(done)
                    echo(f"{model_name} {strategy}{_seed_note(seed, seeds)}: finished earlier, kept")
                else:
                    todo.append((strategy, seed))
        if not todo:
            continue
        backbone = load_backbone(
            model_name, weights_file=config.weights.get(model_name), weights_dir=config.weights_dir,
            pretrained=config.pretrained, allow_random_init=config.allow_random_init, image_size=config.image_size,
            pool_stages=config.pool_stages,
        )
        echo(f"{model_name}: weights from {backbone.source}; input {backbone.preprocessing['input_size'][1]} px")
        if _fit_small_images(backbone, dataset):
            echo("  small images: upscaled whole, without the centre crop (a thumbnail has no margin to spare)")
        pool = _feature_pool(backbone, dataset, config, precision, runtime, cache_dir) if folds else None
        for strategy, seed in todo:
            folder = entry_folder(run_dir, model_name, strategy, seed, len(seeds))
            seeded = dataclasses.replace(config, seed=seed)
            if folds:
                row, failed = _run_folds(strategy, backbone, folds, seeded, precision, runtime, folder, cache_dir,
                                         pool, echo, resume)
            else:
                row, failed = run_strategy(strategy, backbone, dataset, seeded, precision, runtime, folder,
                                           cache_dir, echo)
            skipped.update(failed)
            rows.append(row)
            echo(f"  {strategy}{_seed_note(seed, seeds)}: test accuracy {row['accuracy']:.4f}"
                 + (f" pooled over {len(folds)} folds (per fold {row['fold_accuracy_mean']:.4f} ± "
                    f"{row['fold_accuracy_std']:.4f})" if folds else "") + f" ({row['train_seconds']:.1f} s"
                 + (f" + {row['tune_seconds']:.1f} s search" if row.get("tune_seconds") else "") + ")")
    results = _finish(run_dir, config, rows, sorted(skipped), echo)
    _check_gate(results, config.assert_accuracy_at_least)
    return results


def _check_gate(results: "Results", least: float | None) -> None:
    """--assert-accuracy-at-least: a CI gate, checked after everything is written."""
    if least is None:
        return
    best = results.best()
    if best["accuracy"] < least:
        raise AccuracyGateError(f"best test accuracy {best['accuracy']:.4f} ({best['model']} / {best['strategy']}) "
                                f"is below --assert-accuracy-at-least {least:g}; results are in {results.run_dir}")


def _val_fraction(config: RunConfig) -> float:
    """With --folds, validation takes the share of the training folds that --split gives it of train + val."""
    return config.split[1] / (config.split[0] + config.split[1])


def _feature_pool(backbone, dataset: DatasetSpec, config: RunConfig, precision: str, runtime: str,
                  cache_dir: Path) -> FeaturePool:
    """One feature extraction of every image for all folds (the cache is keyed by the exact file list)."""
    def extract(items, mirror):
        return extract_features(backbone, items, precision=precision, batch_size=FEATURE_BATCH,
                                workers=config.workers, cache_dir=cache_dir, runtime=runtime, mirror=mirror,
                                desc=f"{backbone.spec.name} all images" + (" mirrored" if mirror else ""))
    return FeaturePool(all_items(dataset), extract)


def _run_folds(strategy, backbone, folds: list[DatasetSpec], config, precision, runtime, folder: Path, cache_dir,
               pool: FeaturePool, echo, resume: bool) -> tuple[dict, list[str]]:
    """Every fold as an entry of its own (fold1/, fold2/, ...), then the entry of all folds pooled."""
    fold_rows, fold_folders, skipped = [], [], set()
    for number, fold in enumerate(folds, start=1):
        fold_folder = folder / f"fold{number}"
        done = resume and finished_row(fold_folder)
        if done and (fold_folder / PROBABILITIES).is_file():
            row = done
        else:
            row, failed = run_strategy(strategy, backbone, fold, config, precision, runtime, fold_folder, cache_dir,
                                       echo, pool=pool, keep_probabilities=True)
            skipped.update(failed)
        echo(f"  {strategy} fold {number}: test accuracy {row['accuracy']:.4f} on {row['n_test']} images")
        fold_rows.append(row)
        fold_folders.append(fold_folder)
    title = f"{fold_rows[0]['model']} / {strategy}"
    summary = write_pooled(folder, fold_folders, fold_rows, folds[0].classes, title)
    return {**summary, "folder": folder.name}, sorted(skipped)


def _fit_small_images(backbone, dataset: DatasetSpec) -> bool:
    """Drop the centre crop for datasets of small square images (data/small.py); True when it did."""
    whole = without_centre_crop(backbone.preprocessing, dataset.splits["train"])
    if whole is not None:
        backbone.preprocessing = whole
    return whole is not None


def _seed_note(seed: int, seeds: list[int]) -> str:
    return f" (seed {seed})" if len(seeds) > 1 else ""


def resume_run(run_dir: str | Path, *, echo=print) -> Results:
    """Continue an interrupted `showdown run` from its folder, with the configuration it was started with."""
    config_file = Path(run_dir) / "config.yaml"
    if not config_file.is_file():
        raise ConfigError(f"{run_dir} is not a showdown run folder (no config.yaml)")
    config = RunConfig.from_dict(yaml.safe_load(config_file.read_text()))
    config.out = str(run_dir)
    echo(f"resuming {run_dir}")
    return run(config, echo=echo, resume=True)


def _record_run(run_dir: Path, config: RunConfig, dataset: DatasetSpec, precision: str, runtime: str,
                folds: list[DatasetSpec] | None = None) -> None:
    config.save(run_dir / "config.yaml")
    write_json(run_dir / "environment.json", environment(precision, runtime))
    write_json(run_dir / "dataset.json", {
        "name": dataset.name, "root": str(dataset.root), "classes": dataset.classes, "counts": dataset.counts(),
        "split": folds[0].split_source.partition(" of ")[2] if folds else dataset.split_source,
        "fingerprint": dataset.fingerprint, "warnings": dataset.warnings,
    })
    write_csv(run_dir / "leakage.csv", dataset.leaks)  # nothing is written when there are none
    if folds:  # the folds replace the split: every image, its test fold and its role in each fold
        write_csv(run_dir / "folds.csv", fold_table(folds))
        return
    write_csv(run_dir / "splits.csv", [
        {"split": split, "path": str(path), "label": dataset.classes[label]}
        for split in SPLITS for path, label in dataset.splits[split]
    ])


def train_settings(config: RunConfig, precision: str = "fp32") -> TrainSettings:
    return TrainSettings(
        epochs=config.epochs, lr=config.lr, optimizer=config.optimizer, weight_decay=config.weight_decay,
        momentum=config.momentum, patience=config.patience, schedule=config.schedule,
        label_smoothing=config.label_smoothing, precision=precision, grad_clip=config.grad_clip, seed=config.seed,
        mixup=config.augment == "strong",
    )


def feature_batches(features, batch_size: int, *, shuffle: bool = False) -> DataLoader:
    """Shuffled from the global RNG, which `fit` seeds at every epoch."""
    return DataLoader(TensorDataset(features.features, features.labels), batch_size=batch_size, shuffle=shuffle)


class MirrorBatches:
    """Shuffled training batches in which every image appears as itself or as its mirror image, by a coin per
    image and epoch: the `flip` augmentation on cached features or boundary activations (both computed once).
    Drawn from the global RNG, which `fit` seeds at every epoch."""

    def __init__(self, plain, mirrored, batch_size: int):
        if not torch.equal(plain.indices, mirrored.indices):
            raise RuntimeError("plain and mirrored images differ")  # both skip the same unreadable files
        self.plain, self.mirrored, self.labels = plain.features, mirrored.features, plain.labels
        self.batch_size = batch_size

    def __len__(self) -> int:
        return -(-len(self.labels) // self.batch_size)

    def __iter__(self):
        order = torch.randperm(len(self.labels))
        mirror = torch.rand(len(self.labels)) < 0.5
        for batch in order.split(self.batch_size):
            pick = mirror[batch].view(-1, *[1] * (self.plain.dim() - 1))
            yield torch.where(pick, self.mirrored[batch], self.plain[batch]), self.labels[batch]


class XY:
    """(inputs, targets) batches from an image loader, whose batches also carry indices and failures.
    `readable` lists, after a pass, the item indices of the images it yielded (unreadable files are skipped)."""

    def __init__(self, loader):
        self.loader = loader
        self.readable: list[int] = []

    def __len__(self) -> int:
        return len(self.loader)

    def __iter__(self):
        self.readable = []
        for images, labels, indices, _ in self.loader:
            if len(images):
                self.readable += indices.tolist()
                yield images.contiguous(memory_format=torch.channels_last), labels


def image_batches(items, preprocessing, config: RunConfig, *, train: bool) -> XY:
    transform = train_transform(preprocessing, config.augment) if train else eval_transform(preprocessing)
    return XY(image_loader(items, transform, batch_size=config.batch_size if train else FEATURE_BATCH,
                           workers=config.workers, shuffle=train))


@dataclass
class Entry:
    """One (backbone, strategy) of the showdown and everything its phases share."""

    backbone: object
    model: ImageClassifier
    dataset: DatasetSpec
    config: RunConfig
    precision: str
    runtime: str  # engine of the frozen forward passes (runtime.py)
    folder: Path
    cache_dir: Path
    echo: object
    timing: dict = field(default_factory=lambda: {"failed": []})
    pool: FeaturePool | None = None  # with --folds: every image's features, extracted once for all folds
    checkpoints: bool = True  # a search trial writes none (it is repeated, not resumed)
    on_epoch: object = None  # called with the best validation loss after every epoch (the search's pruner)

    def checkpoint(self, phase: str) -> Path | None:
        return self.folder / f"checkpoint-{phase}.pt" if self.checkpoints else None

    def class_weights(self) -> torch.Tensor | None:
        """'balanced': each class weighs n / (k * n_class), as scikit-learn computes it."""
        if self.config.class_weight != "balanced":
            return None
        labels = np.array([label for _, label in self.dataset.splits["train"]])
        present = np.unique(labels)
        weights = np.ones(len(self.dataset.classes))
        weights[present] = compute_class_weight("balanced", classes=present, y=labels)
        return torch.tensor(weights, dtype=torch.float32)

    def fit(self, net, train_batches, val_batches, settings, phase, **kwargs) -> list[dict]:
        return fit(net, train_batches, val_batches, settings, phase=phase, checkpoint=self.checkpoint(phase),
                   class_weights=self.class_weights(), num_classes=len(self.dataset.classes),
                   on_epoch=self.on_epoch, **kwargs)

    def images(self, split: str, *, train: bool = False) -> XY:
        return image_batches(self.dataset.splits[split], self.backbone.preprocessing, self.config, train=train)


def _extract_all(entry: Entry) -> dict:
    """Cached features per split; with `--augment flip` also "train_mirrored", the mirror images' features, and
    with `--tta flip` "test_mirrored". Only the dataset's splits are read: a search's dataset has no test split."""
    def extract(split: str, mirror: bool = False):
        if entry.pool is not None:
            return entry.pool.subset(entry.dataset.splits[split], mirror)
        return extract_features(entry.backbone, entry.dataset.splits[split], precision=entry.precision,
                                batch_size=FEATURE_BATCH, workers=entry.config.workers, cache_dir=entry.cache_dir,
                                desc=f"{entry.backbone.spec.name} {split}", runtime=entry.runtime, mirror=mirror)

    features = {split: extract(split) for split in entry.dataset.splits}
    if entry.config.augment == "flip":
        features["train_mirrored"] = extract("train", mirror=True)
    if entry.config.tta == "flip" and "test" in entry.dataset.splits:
        features["test_mirrored"] = extract("test", mirror=True)
    return features


def train_batches(cached: dict, config: RunConfig):
    """Training batches from cached tensors, mirrored half the time with `--augment flip`."""
    if "train_mirrored" in cached:
        return MirrorBatches(cached["train"], cached["train_mirrored"], config.batch_size)
    return feature_batches(cached["train"], config.batch_size, shuffle=True)


# Augmentations the caches can serve: none, and flip (each image and its mirror image computed once).
CACHEABLE_AUGMENTS = ("none", "flip")


def _train_head(entry: Entry) -> tuple[list[dict], dict | None]:
    """Phase `head`: the frozen backbone runs once per image (cached) unless augmentation needs every epoch."""
    config, model, timing = entry.config, entry.model, entry.timing
    freeze_backbone(model)
    settings = train_settings(config)
    start = time.perf_counter()
    if config.augment in CACHEABLE_AUGMENTS:
        features = _extract_all(entry)
        timing["feature_seconds"] = time.perf_counter() - start
        timing["feature_cache_hit"] = all(f.cache_hit for f in features.values())
        history = entry.fit(model.head, train_batches(features, config), feature_batches(features["val"], 1024),
                            settings, "head")
        timing["failed"] = [path for f in features.values() for path in f.failed]
    else:
        entry.echo(f"  feature cache off: augmentation '{config.augment}' changes the inputs every epoch")
        history = entry.fit(model, entry.images("train", train=True), entry.images("val"),
                            dataclasses.replace(settings, precision=entry.precision), "head",
                            keep_eval=batchnorms_kept_in_eval(model))
        features = None
    timing["head_seconds"] = time.perf_counter() - start
    return history, features


def _train_top(entry: Entry) -> list[dict]:
    """Phase `finetune`: the unfrozen top of the backbone and the head train at a lower learning rate."""
    config, model = entry.config, entry.model
    trained = unfreeze(model, config.unfreeze)
    settings = dataclasses.replace(train_settings(config), lr=config.lr * config.ft_lr_factor,
                                   epochs=config.ft_epochs or config.epochs)
    groups = lr_param_groups(model, settings.lr, config.lr_decay)
    keep_eval = batchnorms_kept_in_eval(model, config.train_bn)
    entry.echo(f"  finetune: {len(trained)} backbone tensors unfrozen ({config.unfreeze}), lr {settings.lr:g}")
    start = time.perf_counter()
    top = _boundary_top(entry)
    if top is not None:
        net, batches = top
        history = entry.fit(net, train_batches(batches, config), feature_batches(batches["val"], config.batch_size),
                            settings, "finetune",
                            params=groups, keep_eval=keep_eval, keep_start=True)
    else:
        history = entry.fit(model, entry.images("train", train=True), entry.images("val"),
                            dataclasses.replace(settings, precision=entry.precision), "finetune", params=groups,
                            keep_eval=keep_eval, keep_start=True)
    entry.timing["finetune_seconds"] = time.perf_counter() - start
    return history


def _boundary_top(entry: Entry):
    """(top network, boundary activations per split) when the frozen bottom can be cached, else None."""
    config, backbone, echo = entry.config, entry.backbone, entry.echo
    if config.augment not in CACHEABLE_AUGMENTS:
        echo(f"  boundary cache off: augmentation '{config.augment}' changes the inputs every epoch; full forward")
        return None
    layers = sequential_layers(backbone.model, backbone.preprocessing["input_size"])
    cut = first_trainable(layers) if layers else 0
    if not cut:
        echo("  boundary cache off: nothing frozen below the trainable layers, or no sequential split; full forward")
        return None
    bottom = nn.Sequential(*layers[:cut])
    with torch.inference_mode():
        per_image = bottom(torch.zeros(1, *backbone.preprocessing["input_size"])).numel() * 2  # bf16 bytes
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
        return forward_frozen(bottom, backbone.preprocessing, entry.dataset.splits[split], precision=entry.precision,
                              batch_size=FEATURE_BATCH, workers=config.workers,
                              desc=f"boundary {split}", name=f"the frozen bottom of {backbone.spec.name}",
                              store_dtype=torch.bfloat16, runtime=entry.runtime, mirror=mirror)

    batches = {split: activations(split) for split in entry.dataset.splits}
    if mirror:
        batches["train_mirrored"] = activations("train", mirror=True)
    return TopOfNetwork(layers[cut:], backbone.model, entry.model.head), batches


def _ram_bytes() -> int:
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")


def _evaluate(entry: Entry, features):
    """Test probabilities from cached features when the backbone is unchanged, else from the images."""
    if features is not None:
        probs, y_true = predict_proba(_HeadWithTTA(entry.model.head), _test_feature_batches(features))
        kept = features["test"].indices.tolist()
    else:
        batches = entry.images("test")
        probs, y_true = predict_proba(entry.model, batches, entry.precision)
        kept = batches.readable  # recorded during that pass: the test images are decoded once
    return probs, y_true, [entry.dataset.splits["test"][i] for i in kept]


class _HeadWithTTA(nn.Module):
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


def entry_folder(run_dir: Path, model_name: str, strategy: str, seed: int = 0, repeats: int = 1) -> Path:
    model_name = "scratch_cnn" if strategy == "scratch-cnn" else model_name
    return run_dir / slug(f"{model_name}-{strategy}" + (f"-seed{seed}" if repeats > 1 else ""))


def finished_row(folder: Path) -> dict | None:
    """The summary row of an entry that completed earlier (for --resume), or None."""
    metrics = folder / "metrics.json"
    if not metrics.is_file():
        return None
    summary = json.loads(metrics.read_text())
    if "folds" not in summary and not (folder / "model.safetensors").is_file():  # folds pool: one model per fold
        return None
    return {**{k: v for k, v in summary.items() if k not in DETAIL_KEYS}, "folder": folder.name}


def run_strategy(strategy, backbone, dataset, config, precision, runtime, folder, cache_dir, echo, *,
                 pool: FeaturePool | None = None, keep_probabilities: bool = False) -> tuple[dict, list[str]]:
    folder.mkdir(parents=True, exist_ok=True)
    base, _, unfreeze_spec = strategy.partition("=")  # finetune=layers:20 names its own unfreeze
    if unfreeze_spec:
        config = dataclasses.replace(config, unfreeze=unfreeze_spec)
    search = None
    if config.tuning:  # the chosen values become this entry's configuration
        config, search = _search(strategy, backbone, dataset, config, precision, runtime, folder, cache_dir, pool)
        echo(f"  {strategy}: {describe_search(search)}")
    backbone, model = _build_model(strategy, backbone, dataset, config)
    entry = Entry(backbone, model, dataset, config, precision, runtime, folder, cache_dir, echo, pool=pool)
    if search is not None:
        entry.timing["tune_seconds"] = search["seconds"]
    start = time.perf_counter()
    history, features = _train(entry, strategy)
    entry.timing["train_seconds"] = time.perf_counter() - start
    probs, y_true, test_items = _evaluate(entry, features)
    metrics = classification_metrics(y_true, probs, dataset.classes)
    failed = entry.timing.pop("failed")
    row = _write_entry(entry, strategy, metrics, history, probs, y_true, test_items, search, keep_probabilities)
    for checkpoint in folder.glob("checkpoint-*.pt"):  # the entry is complete; its results replace them
        checkpoint.unlink()
    return row, failed


def _build_model(strategy: str, backbone, dataset: DatasetSpec, config: RunConfig):
    """(backbone, classifier) of an entry, seeded. A backbone that trains is a copy, so every entry (seed, fold,
    search trial) starts from the same ImageNet weights."""
    torch.manual_seed(config.seed)
    if strategy == "scratch-cnn":
        backbone = small_cnn_backbone(config.image_size)
    elif strategy == "scratch":
        backbone = load_backbone(backbone.spec.name, pretrained=False, image_size=config.image_size,
                                 pool_stages=config.pool_stages)
        _fit_small_images(backbone, dataset)
    elif strategy.startswith("finetune"):
        backbone = copy.deepcopy(backbone)
    head = Head(backbone.num_features, len(dataset.classes), config.head_hidden, config.head_dropout, config.head_bn)
    return backbone, ImageClassifier(backbone.model, head, config.tta)


def _train(entry: Entry, strategy: str) -> tuple[list[dict], dict | None]:
    """The entry's training phases: (history, cached features when the backbone stayed frozen)."""
    base = strategy.partition("=")[0]
    if base in ("head", "finetune"):
        history, features = _train_head(entry)
        if base == "finetune":
            history += _train_top(entry)
            features = None  # the backbone changed: evaluate on images
        return history, features
    for param in entry.model.parameters():  # from random init every layer trains, batch norm included
        param.requires_grad_(True)
    settings = dataclasses.replace(train_settings(entry.config), precision=entry.precision)
    return entry.fit(entry.model, entry.images("train", train=True), entry.images("val"), settings, strategy), None


def _search(strategy, backbone, dataset: DatasetSpec, config: RunConfig, precision, runtime, folder: Path,
            cache_dir, pool) -> tuple[RunConfig, dict]:
    """`--tune`: Optuna trials of this entry's training on its training and validation splits. The trials'
    dataset has no test split at all, so no trial can read a test image."""
    seen = dataclasses.replace(dataset, splits={split: dataset.splits[split] for split in ("train", "val")})

    def train_trial(trial_config: RunConfig, on_epoch) -> list[dict]:
        trial_backbone, model = _build_model(strategy, backbone, seen, trial_config)
        entry = Entry(trial_backbone, model, seen, trial_config, precision, runtime, folder, cache_dir,
                      echo=lambda *_: None, pool=pool, checkpoints=False, on_epoch=on_epoch)
        return _train(entry, strategy)[0]

    base = strategy.partition("=")[0]
    start = time.perf_counter()
    if base in ("head", "finetune") and config.augment in CACHEABLE_AUGMENTS:
        # The frozen backbone runs once, before the trials, so the search time is the search's alone.
        trial_backbone, model = _build_model("head", backbone, seen, config)
        _extract_all(Entry(trial_backbone, model, seen, config, precision, runtime, folder, cache_dir,
                           echo=lambda *_: None, pool=pool))
    extraction = time.perf_counter() - start
    config, search = tune(config, base, train_trial, folder / "search.db", unfreeze_named="=" in strategy)
    return config, {**search, "feature_seconds": extraction}


def _write_entry(entry: Entry, strategy, metrics, history, probs, y_true, test_items, search: dict | None = None,
                 keep_probabilities: bool = False) -> dict:
    backbone, model, dataset, config, folder = entry.backbone, entry.model, entry.dataset, entry.config, entry.folder
    info = {"model": backbone.spec.name, "strategy": strategy, "seed": config.seed}
    params = sum(p.numel() for p in model.parameters())
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    summary = {**info, **{k: v for k, v in metrics.items() if k not in DETAIL_KEYS}, **entry.timing,
               "params_m": params / 1e6, "trainable_params": trainable, "weights": backbone.source,
               "pretrained": backbone.pretrained}
    write_csv(folder / "history.csv", history)
    write_csv(folder / "predictions.csv", [
        {"path": str(path), "true": dataset.classes[t], "pred": dataset.classes[p.argmax()],
         "confidence": float(p.max())}
        for (path, _), t, p in zip(test_items, y_true, probs)
    ])
    if keep_probabilities:  # a fold's: the pooled entry's loss needs them (folds.py)
        np.save(folder / PROBABILITIES, probs.astype(np.float32))
    if search is not None:  # the tuned configuration of this entry, reusable with --config (no new search)
        dataclasses.replace(config, models=[backbone.spec.name], strategies=[strategy], tune=0, tune_minutes=None,
                            out=None).save(folder / "config.yaml")
    title = f"{info['model']} / {strategy}"
    plot_confusion(metrics["confusion_matrix"], dataset.classes, folder / "confusion.png", title)
    plot_curves(history, folder / "curves.png", title)
    save_model(model, folder, {
        "classes": dataset.classes, "backbone": backbone.spec.name, "timm_name": backbone.spec.timm_name,
        "timm_kwargs": backbone.timm_kwargs, "pool_stages": backbone.pool_stages, "weights_source": backbone.source,
        "preprocessing": backbone.preprocessing, "strategy": strategy, "tta": config.tta,
        "head": {"in_features": backbone.num_features, "hidden": list(config.head_hidden),
                 "dropout": config.head_dropout, "batch_norm": config.head_bn},
    })
    # What the report's fairness check compares between entries.
    setup = {"evaluation": dataset.split_source, "test_images": len(test_items),
             "input_size": backbone.preprocessing["input_size"][-1], "augment": config.augment, "tta": config.tta,
             "tuning": search["budget"] if search else None}
    # Last: a metrics.json marks the entry complete (--resume skips it).
    write_json(folder / "metrics.json", {**summary, "per_class": metrics["per_class"],
                                         "confusion_matrix": metrics["confusion_matrix"], "classes": dataset.classes,
                                         "setup": setup, **({"tuning": search} if search else {})})
    return {**summary, "folder": folder.name}


def _finish(run_dir: Path, config: RunConfig, rows: list[dict], skipped: list[str], echo) -> Results:
    write_json(run_dir / "summary.json", {"rows": rows, "skipped_files": skipped})
    write_csv(run_dir / "summary.csv", rows)
    write_atomic(run_dir / "summary.md", format_markdown(rows))
    if skipped:
        write_atomic(run_dir / "skipped.txt", "\n".join(skipped) + "\n")
    results = Results(run_dir, rows, skipped)
    echo("")
    echo(results.table())
    echo("")
    if config.bench:
        from showdown.reporting.bench import bench_models

        bench_models(config.models, config, run_dir, echo=echo)
    if config.report:
        report_html, _ = report_run(run_dir)
        echo(f"report: {report_html}")
    if config.record:
        run_id = record_run(run_dir, config.db)
        echo(f"recorded as run {run_id} in {config.db or default_db()}")
    if skipped:
        echo(f"skipped {len(skipped)} unreadable image file(s); listed in {run_dir / 'skipped.txt'}")
    echo(f"run folder: {run_dir}")
    return results
