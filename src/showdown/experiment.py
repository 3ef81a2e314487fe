"""A showdown: every (backbone, strategy) on one dataset, evaluated on the same test split.

`run(config)` is the Python API; the CLI only parses flags into a RunConfig and calls it.
"""
from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch.utils.data import DataLoader, TensorDataset

from .backbones import Backbone, load_backbone, resolve_backbone
from .config import RunConfig
from .data import DatasetSpec, load_dataset
from .data.folder import SPLITS
from .data.sources import cache_root
from .evaluate import classification_metrics, predict_proba
from .features import extract_features
from .head import Head, ImageClassifier
from .model_io import save_model
from .plots import plot_confusion, plot_curves
from .precision import resolve_precision
from .results import environment, format_markdown, format_table, new_run_dir, slug, write_atomic, write_csv, write_json
from .strategies import freeze_backbone
from .train import TrainSettings, fit

log = logging.getLogger(__name__)
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


def run(config: RunConfig, *, echo=print) -> Results:
    config.validate()
    for name in config.models:  # an unknown name fails before any work is done
        resolve_backbone(name)
    dataset = load_dataset(config.data, data_root=config.data_root, split=config.split, seed=config.seed)
    precision = resolve_precision(config.precision)
    run_dir = new_run_dir(config.out, config.name or dataset.name)
    _record_run(run_dir, config, dataset, precision)
    counts = dataset.counts()
    echo(f"data: {dataset.name} ({len(dataset.classes)} classes; train {counts['train']}, val {counts['val']}, "
         f"test {counts['test']}; split {dataset.split_source})")
    for warning in dataset.warnings:
        echo(f"warning: {warning}")
    cache_dir = Path(config.cache_dir) if config.cache_dir else cache_root() / "features"
    rows, skipped = [], set()
    for model_name in config.models:
        backbone = load_backbone(
            model_name, weights_file=config.weights.get(model_name), weights_dir=config.weights_dir,
            pretrained=config.pretrained, allow_random_init=config.allow_random_init, image_size=config.image_size,
        )
        echo(f"{model_name}: weights from {backbone.source}; input {backbone.preprocessing['input_size'][1]} px")
        for strategy in config.strategies:
            row, failed = run_head(backbone, dataset, config, precision, run_dir, cache_dir)
            skipped.update(failed)
            rows.append(row)
            echo(f"  {strategy}: test accuracy {row['accuracy']:.4f} ({row['train_seconds']:.1f} s)")
    return _finish(run_dir, rows, sorted(skipped), echo)


def _record_run(run_dir: Path, config: RunConfig, dataset: DatasetSpec, precision: str) -> None:
    config.save(run_dir / "config.yaml")
    write_json(run_dir / "environment.json", environment(precision))
    write_json(run_dir / "dataset.json", {
        "name": dataset.name, "root": str(dataset.root), "classes": dataset.classes, "counts": dataset.counts(),
        "split": dataset.split_source, "fingerprint": dataset.fingerprint, "warnings": dataset.warnings,
    })
    write_csv(run_dir / "splits.csv", [
        {"split": split, "path": str(path), "label": dataset.classes[label]}
        for split in SPLITS for path, label in dataset.splits[split]
    ])


def train_settings(config: RunConfig, precision: str = "fp32") -> TrainSettings:
    return TrainSettings(
        epochs=config.epochs, lr=config.lr, optimizer=config.optimizer, weight_decay=config.weight_decay,
        momentum=config.momentum, patience=config.patience, schedule=config.schedule,
        label_smoothing=config.label_smoothing, precision=precision,
    )


def feature_batches(features, batch_size: int, *, shuffle: bool = False, seed: int = 0) -> DataLoader:
    generator = torch.Generator().manual_seed(seed)
    return DataLoader(TensorDataset(features.features, features.labels), batch_size=batch_size, shuffle=shuffle,
                      generator=generator)


def run_head(backbone: Backbone, dataset: DatasetSpec, config: RunConfig, precision: str, run_dir: Path,
             cache_dir: Path) -> tuple[dict, list[str]]:
    """Strategy `head`: the frozen backbone runs once per image (cached); only the head trains."""
    start = time.perf_counter()
    features = {
        split: extract_features(backbone, dataset.splits[split], precision=precision, batch_size=FEATURE_BATCH,
                                workers=config.workers, cache_dir=cache_dir, desc=f"{backbone.spec.name} {split}")
        for split in SPLITS
    }
    feature_seconds = time.perf_counter() - start
    torch.manual_seed(config.seed)
    head = Head(backbone.num_features, len(dataset.classes), config.head_hidden, config.head_dropout, config.head_bn)
    model = ImageClassifier(backbone.model, head)
    freeze_backbone(model)
    fit_start = time.perf_counter()
    history = fit(
        head, feature_batches(features["train"], config.batch_size, shuffle=True, seed=config.seed),
        feature_batches(features["val"], 1024), train_settings(config), phase="head",
    )
    fit_seconds = time.perf_counter() - fit_start
    probs, y_true = predict_proba(head, feature_batches(features["test"], 1024))
    metrics = classification_metrics(y_true, probs, dataset.classes)
    test_items = [dataset.splits["test"][i] for i in features["test"].indices.tolist()]
    entry = {"model": backbone.spec.name, "strategy": "head"}
    failed = [path for f in features.values() for path in f.failed]
    row = _write_entry(run_dir, entry, model, backbone, dataset, config, metrics, history, probs, y_true, test_items,
                       {"train_seconds": feature_seconds + fit_seconds, "feature_seconds": feature_seconds,
                        "fit_seconds": fit_seconds, "feature_cache_hit": all(f.cache_hit for f in features.values())})
    return row, failed


def _write_entry(run_dir, entry, model, backbone, dataset, config, metrics, history, probs, y_true, test_items,
                 timing) -> dict:
    folder = run_dir / slug(f"{entry['model']}-{entry['strategy']}")
    folder.mkdir(parents=True, exist_ok=True)
    params = sum(p.numel() for p in model.parameters())
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    summary = {**entry, **{k: v for k, v in metrics.items() if not isinstance(v, (dict, list))}, **timing,
               "params_m": params / 1e6, "trainable_params": trainable, "weights": backbone.source,
               "pretrained": backbone.pretrained}
    write_json(folder / "metrics.json", {**summary, "per_class": metrics["per_class"],
                                         "confusion_matrix": metrics["confusion_matrix"], "classes": dataset.classes})
    write_csv(folder / "history.csv", history)
    write_csv(folder / "predictions.csv", [
        {"path": str(path), "true": dataset.classes[t], "pred": dataset.classes[p.argmax()], "confidence": float(p.max())}
        for (path, _), t, p in zip(test_items, y_true, probs)
    ])
    title = f"{entry['model']} / {entry['strategy']}"
    plot_confusion(metrics["confusion_matrix"], dataset.classes, folder / "confusion.png", title)
    plot_curves(history, folder / "curves.png", title)
    save_model(model, folder, {
        "classes": dataset.classes, "backbone": backbone.spec.name, "timm_name": backbone.spec.timm_name,
        "timm_kwargs": backbone.timm_kwargs, "weights_source": backbone.source,
        "preprocessing": backbone.preprocessing, "strategy": entry["strategy"],
        "head": {"in_features": backbone.num_features, "hidden": list(config.head_hidden),
                 "dropout": config.head_dropout, "batch_norm": config.head_bn},
    })
    return {**summary, "folder": folder.name}


def _finish(run_dir: Path, rows: list[dict], skipped: list[str], echo) -> Results:
    write_json(run_dir / "summary.json", {"rows": rows, "skipped_files": skipped})
    write_csv(run_dir / "summary.csv", rows)
    write_atomic(run_dir / "summary.md", format_markdown(rows))
    if skipped:
        write_atomic(run_dir / "skipped.txt", "\n".join(skipped) + "\n")
    results = Results(run_dir, rows, skipped)
    echo("")
    echo(results.table())
    echo("")
    if skipped:
        echo(f"skipped {len(skipped)} unreadable image file(s); listed in {run_dir / 'skipped.txt'}")
    echo(f"run folder: {run_dir}")
    return results
