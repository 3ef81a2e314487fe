"""The run folder: every number in the table can be traced to a file here.

<run>/config.yaml, environment.json, dataset.json, splits.csv (or folds.csv), leakage.csv; one folder per entry
(metrics.json last, so its presence marks the entry complete); summary.json/.csv/.md at the end. The names and row
types are run_schema's.
"""
from __future__ import annotations

import dataclasses
import io
import json
import logging
import os
import platform
from collections.abc import Callable
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

import numpy as np
import torch

from showdown import distributed
from showdown.config.run_config import RunConfig
from showdown.config.strategy import Strategy
from showdown.data import DatasetSpec
from showdown.data.folder import SPLITS
from showdown.data.images import why_unreadable
from showdown.device import CPU, device_facts
from showdown.experiment.context import Entry
from showdown.experiment.folds import fold_table
from showdown.experiment.resume import absolute_paths
from showdown.fileio import slug, write_atomic, write_bytes_atomic, write_csv, write_json
from showdown.models.saving import save_model
from showdown.reporting.plots import plot_confusion, plot_curves
from showdown.reporting.tables import format_markdown
from showdown.run_schema import (
    CONFIG,
    CONFUSION_PLOT,
    CURVES_PLOT,
    DATASET,
    DETAIL_KEYS,
    ENTRY_CONFIG,
    ENVIRONMENT,
    FOLDS_CSV,
    HISTORY,
    LEAKAGE,
    METRICS,
    MODEL_WEIGHTS,
    PREDICTIONS,
    PROBABILITIES,
    SKIPPED,
    SPLITS_CSV,
    SUMMARY_CSV,
    SUMMARY_JSON,
    SUMMARY_MD,
    EntryRow,
    HeadInfo,
    ModelInfo,
    PredictionRow,
    write_rows,
)

log = logging.getLogger(__name__)


def write_run_start(run_dir: Path, config: RunConfig, dataset: DatasetSpec, precision: str, runtime: str,
                    folds: list[DatasetSpec] | None = None, device: torch.device = CPU) -> None:
    """What the run was given, before any training: its configuration, machine, dataset and split. config.yaml is
    written last: a run folder with it can be resumed."""
    write_json(run_dir / ENVIRONMENT, environment(precision, runtime, device))
    write_json(run_dir / DATASET, {
        "name": dataset.name, "root": str(dataset.root), "classes": dataset.classes, "counts": dataset.counts(),
        "split": folds[0].split_source.partition(" of ")[2] if folds else dataset.split_source,
        "fingerprint": dataset.fingerprint, "warnings": dataset.warnings,
    })
    write_csv(run_dir / LEAKAGE, dataset.leaks)  # nothing is written when there are none
    if folds:  # the folds replace the split: every image, its test fold and its role in each fold
        write_csv(run_dir / FOLDS_CSV, fold_table(folds))
    else:
        write_csv(run_dir / SPLITS_CSV, [
            {"split": split, "path": str(path), "label": dataset.classes[label]}
            for split in SPLITS for path, label in dataset.splits[split]
        ])
    absolute_paths(config).save(run_dir / CONFIG)  # --resume from any folder finds the same files


def environment(precision: str, runtime: str = "torch", device: torch.device = CPU) -> dict:
    def pkg(name):
        try:
            return version(name)
        except PackageNotFoundError:
            return None

    return {
        "python": platform.python_version(), "platform": platform.platform(),
        "cpu": platform.processor() or platform.machine(),
        "cpu_count": os.cpu_count(), "torch_threads": torch.get_num_threads(), "cuda": torch.cuda.is_available(),
        "precision": precision, "runtime": runtime, "device": device_facts(device),
        "processes": distributed.world_size(),  # torchrun's WORLD_SIZE
        "packages": {n: pkg(n) for n in ("tl-showdown", "torch", "torchvision", "timm", "scikit-learn", "numpy",
                                         "pillow", "onnxruntime", "openvino")},
    }


def entry_folder(run_dir: Path, model_name: str, strategy: Strategy, seed: int = 0, repeats: int = 1) -> Path:
    model_name = strategy.model_name(model_name)
    return run_dir / slug(f"{model_name}-{strategy}" + (f"-seed{seed}" if repeats > 1 else ""))


def finished_row(folder: Path) -> dict | None:
    """The summary row of an entry that completed earlier (for --resume), or None."""
    metrics = folder / METRICS
    if not metrics.is_file():
        return None
    try:
        summary = json.loads(metrics.read_text(encoding="utf-8"))
    except ValueError:  # not JSON, or not UTF-8
        summary = None
    if not isinstance(summary, dict):  # cut short or overwritten: the entry runs again, its files rewritten
        if distributed.is_main():  # every process looks; one says so
            log.warning("%s is damaged; %s runs again", metrics, folder.name)
        return None
    if "folds" not in summary and not (folder / MODEL_WEIGHTS).is_file():  # folds pool: one model per fold
        return None
    return {**{k: v for k, v in summary.items() if k not in DETAIL_KEYS}, "folder": folder.name}


def write_entry(entry: Entry, metrics: dict, history: list[dict], probs: np.ndarray, y_true: np.ndarray,
                test_items: list, search: dict | None = None, keep_probabilities: bool = False, *,
                written_beside: Callable[[], object]) -> dict:
    """The entry's folder: history, predictions, plots, the model, and last metrics.json, once `written_beside()`
    returned (what another thread writes into the folder: the Grad-CAM overlays). Returns its row."""
    backbone, model, dataset, config, folder = entry.backbone, entry.model, entry.dataset, entry.config, entry.folder
    strategy = str(entry.strategy)  # files keep the strategy's text
    params = sum(p.numel() for p in model.parameters())
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    summary = EntryRow.from_dict({
        "model": backbone.spec.name, "strategy": strategy, "seed": config.seed,
        **{k: v for k, v in metrics.items() if k not in DETAIL_KEYS}, **entry.timing.columns(),
        "params_m": params / 1e6, "trainable_params": trainable, "weights": str(backbone.source),
        "pretrained": backbone.pretrained}).to_dict()
    write_csv(folder / HISTORY, history)
    write_rows(folder / PREDICTIONS, [
        PredictionRow(str(path), dataset.classes[t], dataset.classes[p.argmax()], float(p.max()))
        for (path, _), t, p in zip(test_items, y_true, probs)
    ])
    if keep_probabilities:  # a fold's: the pooled entry's loss needs them (folds.py)
        buffer = io.BytesIO()
        np.save(buffer, probs.astype(np.float32))
        write_bytes_atomic(folder / PROBABILITIES, buffer.getvalue(), "the test probabilities")
    if search is not None:  # the tuned configuration of this entry, reusable with --config (no new search)
        dataclasses.replace(config, models=[backbone.spec.name], strategies=[strategy], tune=0, tune_minutes=None,
                            out=None).save(folder / ENTRY_CONFIG)
    title = f"{backbone.spec.name} / {strategy}"
    plot_confusion(metrics["confusion_matrix"], dataset.classes, folder / CONFUSION_PLOT, title)
    plot_curves(history, folder / CURVES_PLOT, title)
    save_model(model, folder, ModelInfo(
        classes=dataset.classes, backbone=backbone.spec.name, timm_name=backbone.spec.timm_name,
        timm_kwargs=backbone.timm_kwargs, pool_stages=backbone.pool_stages, weights_source=str(backbone.source),
        preprocessing=backbone.preprocessing.to_dict(), strategy=strategy, tta=config.tta,
        head=HeadInfo(backbone.num_features, list(config.head_hidden), config.head_dropout, config.head_bn),
    ))
    # What the report's fairness check compares between entries.
    setup = {"evaluation": dataset.split_source, "test_images": len(test_items),
             "input_size": backbone.preprocessing.input_size[-1], "augment": config.augment, "tta": config.tta,
             "tuning": search["budget"] if search else None}
    # Last: a metrics.json marks the entry complete (--resume skips it), so not before every file is in.
    written_beside()
    write_json(folder / METRICS, {**summary, "per_class": metrics["per_class"],
                                         "confusion_matrix": metrics["confusion_matrix"], "classes": dataset.classes,
                                         "setup": setup, **({"tuning": search} if search else {})})
    return {**summary, "folder": folder.name}


def summary_frozen_passes(run_dir: Path) -> dict[str, int]:
    """The frozen-pass counts of the run's summary.json; {} where there is none yet, or it is damaged (it is
    written again at the run's end)."""
    try:
        passes = json.loads((run_dir / SUMMARY_JSON).read_text(encoding="utf-8")).get("frozen_passes")
    except (OSError, ValueError, AttributeError):
        return {}
    return {key: value for key, value in passes.items() if isinstance(value, int)} if isinstance(passes, dict) else {}


def write_summary(run_dir: Path, rows: list[dict], skipped: list[str], frozen_passes: dict,
                  label_issues: dict | None = None) -> None:
    write_json(run_dir / SUMMARY_JSON, {"rows": rows, "skipped_files": skipped, "frozen_passes": frozen_passes,
                                         **({"label_issues": label_issues} if label_issues else {})})
    write_csv(run_dir / SUMMARY_CSV, rows)
    write_atomic(run_dir / SUMMARY_MD, format_markdown(rows))
    if skipped:  # each path with why it did not decode (a tab between)
        write_atomic(run_dir / SKIPPED, "".join(f"{path}\t{why_unreadable(Path(path))}\n" for path in skipped))
