"""Stratified K-fold cross-validation: every image is tested exactly once, and the frozen backbone still runs
once per image.

On a small folder a single split's test accuracy swings by points with the split; K folds test every image once
and show that spread. Each fold is a DatasetSpec like any split (validation carved from its training folds,
stratified and seeded), so every strategy runs on it unchanged. The cached features of all images come from one
extraction (FeaturePool) and are indexed per fold. The folds' test predictions are pooled into one entry whose
predictions.csv covers every image, which is what the report's McNemar and bootstrap read.
"""
from __future__ import annotations

import dataclasses
import statistics
from collections import Counter
from pathlib import Path
from typing import Callable

import numpy as np
import torch
from sklearn.model_selection import StratifiedKFold, train_test_split

from showdown.data.folder import SPLITS, DatasetSpec
from showdown.errors import ConfigError
from showdown.fileio import write_csv, write_json
from showdown.frozen.feature_cache import Features
from showdown.reporting.metrics import classification_metrics
from showdown.reporting.plots import plot_confusion, plot_curves
from showdown.run_schema import (
    CONFUSION_PLOT,
    CURVES_PLOT,
    DETAIL_KEYS,
    HISTORY,
    METRICS,
    PREDICTIONS,
    PROBABILITIES,
    EntryRow,
    PredictionRow,
    read_json,
    read_text_rows,
    write_rows,
)


def all_items(dataset: DatasetSpec) -> list[tuple[Path, int]]:
    """Every image of the dataset once, in path order (the order of the pooled predictions)."""
    return sorted({item for split in SPLITS for item in dataset.splits[split]}, key=lambda item: str(item[0]))


def make_folds(dataset: DatasetSpec, k: int, seed: int, val_fraction: float) -> list[DatasetSpec]:
    """K datasets: fold i tests the i-th stratified part; validation is `val_fraction` of the other parts."""
    items = all_items(dataset)
    labels = np.array([label for _, label in items])
    counts = Counter(labels.tolist())
    smallest = min(counts, key=counts.get)
    if k > counts[smallest]:
        raise ConfigError(f"--folds {k} needs at least {k} images in every class; '{dataset.classes[smallest]}' "
                          f"has {counts[smallest]}: use --folds {max(2, counts[smallest])} or fewer")
    splitter = StratifiedKFold(n_splits=k, shuffle=True, random_state=seed)
    folds = []
    for number, (rest, test) in enumerate(splitter.split(np.zeros(len(items)), labels), start=1):
        try:
            train, val = train_test_split(rest, test_size=val_fraction, stratify=labels[rest], random_state=seed)
        except ValueError as exc:  # a class too small to give every fold's validation part an image
            raise ConfigError(f"--folds {k}: too few images to carve a stratified validation split from the "
                              f"training folds ({exc}); use fewer folds") from exc
        splits = {"train": sorted(train), "val": sorted(val), "test": sorted(test)}
        folds.append(dataclasses.replace(
            dataset, splits={name: [items[i] for i in part] for name, part in splits.items()},
            split_source=f"fold {number} of {describe(k, seed, val_fraction)}"))
    return folds


def describe(k: int, seed: int, val_fraction: float) -> str:
    return (f"stratified {k}-fold cross-validation (seed {seed}); validation {100 * val_fraction:.0f} % of the "
            "training folds, stratified")


def fold_table(folds: list[DatasetSpec]) -> list[dict]:
    """folds.csv: every image, its test fold, and its role (train / val / test) in every fold."""
    roles: dict[str, dict] = {}
    for number, fold in enumerate(folds, start=1):
        for split in SPLITS:
            for path, label in fold.splits[split]:
                row = roles.setdefault(str(path), {"path": str(path), "label": fold.classes[label], "test_fold": None})
                row[f"fold{number}"] = split
                if split == "test":
                    row["test_fold"] = number
    return list(roles.values())


class FeaturePool:
    """Cached features of every image, extracted once (and mirrored once when asked), handed out per split.

    `extract(items, mirror)` is the feature cache (features.extract_features); the folds' splits are subsets of
    one item list, so one extraction serves them all instead of one per fold and split.
    """

    def __init__(self, items: list[tuple[Path, int]], extract: Callable[[list, bool], Features]):
        self.items = items
        self.extract = extract
        self._pooled: dict[bool, tuple[Features, dict[str, int]]] = {}

    def subset(self, items: list[tuple[Path, int]], mirror: bool = False) -> Features:
        if mirror not in self._pooled:
            features = self.extract(self.items, mirror)
            rows = {str(self.items[i][0]): row for row, i in enumerate(features.indices.tolist())}
            self._pooled[mirror] = features, rows
        features, rows = self._pooled[mirror]
        readable = [i for i, (path, _) in enumerate(items) if str(path) in rows]
        picked = torch.tensor([rows[str(items[i][0])] for i in readable], dtype=torch.long)
        failed = [str(path) for path, _ in items if str(path) not in rows]
        return Features(features.features[picked], features.labels[picked], torch.tensor(readable, dtype=torch.long),
                        failed, features.cache_hit)


def write_pooled(folder: Path, fold_folders: list[Path], fold_rows: list[dict], classes: list[str],
                 title: str) -> dict:
    """The entry of all folds together: pooled predictions (every image once, path order), pooled metrics,
    per-fold metrics with mean and std, the folds' histories one after another. Returns its summary."""
    paths, y_true, probs, fold_of, history = [], [], [], [], []
    index = {name: i for i, name in enumerate(classes)}
    for number, fold_folder in enumerate(fold_folders, start=1):
        rows = [PredictionRow.from_dict(row, text=True) for row in read_text_rows(fold_folder / PREDICTIONS)]
        paths += [row.path for row in rows]
        y_true += [index[row.true] for row in rows]
        fold_of += [number] * len(rows)
        probs.append(np.load(fold_folder / PROBABILITIES))
        history += [{**row, "phase": f"fold {number} {row['phase']}"} for row in read_text_rows(fold_folder / HISTORY)]
    order = sorted(range(len(paths)), key=lambda i: paths[i])
    probs_all = np.concatenate(probs)[order]
    y = np.array(y_true)[order]
    metrics = classification_metrics(y, probs_all, classes)
    write_rows(folder / PREDICTIONS, [
        PredictionRow(paths[i], classes[t], classes[p.argmax()], float(p.max()), fold_of[i])
        for i, t, p in zip(order, y, probs_all)])
    write_csv(folder / HISTORY, history)
    plot_confusion(metrics["confusion_matrix"], classes, folder / CONFUSION_PLOT, f"{title}, all folds")
    plot_curves(history, folder / CURVES_PLOT, f"{title}, fold after fold")
    accuracies = [row["accuracy"] for row in fold_rows]
    per_fold = [{"fold": number, **{k: row.get(k) for k in ("accuracy", "loss", "macro_f1", "n_test",
                                                             "train_seconds", "tune_seconds", "params_m")}}
                for number, row in enumerate(fold_rows, start=1)]
    first = fold_rows[0]
    summary = EntryRow.from_dict({
        "model": first["model"], "strategy": first["strategy"], "seed": first["seed"],
        **{k: v for k, v in metrics.items() if k not in DETAIL_KEYS},
        "folds": len(fold_rows),
        "fold_accuracy_mean": statistics.fmean(accuracies),
        "fold_accuracy_std": statistics.stdev(accuracies) if len(accuracies) > 1 else 0.0,
        **{k: sum(row.get(k) or 0 for row in fold_rows) for k in ("train_seconds", "tune_seconds", "feature_seconds")
           if any(k in row for row in fold_rows)},
        **{k: first.get(k) for k in ("params_m", "trainable_params", "weights", "pretrained")},
    }).to_dict()
    details = {"per_class": metrics["per_class"], "confusion_matrix": metrics["confusion_matrix"],
               "classes": classes, "fold_metrics": per_fold}
    fold_details = [read_json(f / METRICS) for f in fold_folders]
    setup = dict(fold_details[0].get("setup") or {})
    setup.update(evaluation=setup.get("evaluation", "").partition(" of ")[2] or "cross-validation",
                 test_images=len(paths))
    details["setup"] = setup
    if fold_details[0].get("tuning"):
        details["tuning"] = {"budget": fold_details[0]["tuning"]["budget"],
                             "folds": [d.get("tuning") for d in fold_details]}
    write_json(folder / METRICS, {**summary, **details})  # last: marks the entry complete
    return summary
