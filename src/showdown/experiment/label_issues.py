"""Images whose given label looks wrong: confident learning (cleanlab) on out-of-fold probabilities.

Test sets hold wrong labels, enough to reorder a leaderboard (Northcutt et al., NeurIPS 2021). After the entries
have run, K heads train on the cached features of the best `head` backbone (training/out_of_fold.py), every
image of every split gets a probability from a head that never saw it, and `cleanlab.filter.find_label_issues`
ranks the images whose label those probabilities doubt. The features come from the cache the head entry filled,
so the whole step is K small trainings. The report reads label_issues.csv (reporting/label_issues.py).
"""
from __future__ import annotations

import hashlib
import io
import time
import warnings
from pathlib import Path

import numpy as np
import torch

from showdown import distributed
from showdown.cache import Damaged, read_named, write_named
from showdown.config.run_config import RunConfig
from showdown.config.strategy import Strategy
from showdown.data import DatasetSpec
from showdown.experiment.context import RunContext
from showdown.experiment.phases import CACHEABLE_AUGMENTS, train_settings
from showdown.fileio import write_csv
from showdown.frozen.feature_cache import extract_views
from showdown.models.backbones import Backbone
from showdown.reporting.label_issues import LABEL_ISSUES, weak_heads
from showdown.training.loop import TrainSettings
from showdown.training.out_of_fold import RECIPE as OUT_OF_FOLD_RECIPE
from showdown.training.out_of_fold import fold_count, out_of_fold


def chosen_backbone(config: RunConfig, rows: list[dict], folds) -> tuple[str | None, str | None]:
    """(the backbone whose features judge the labels: the best head entry's, None), or (None, why not, in one
    line; None with `--label-issues off`). `auto` needs a head entry on one split's cached features."""
    if config.label_issues == "off":
        return None, None
    if folds:
        return None, "label issues: skipped with --folds (they need one split's cached features)"
    if config.augment not in CACHEABLE_AUGMENTS:
        return None, f"label issues: skipped; augmentation '{config.augment}' leaves no cached features"
    heads = [row for row in rows if Strategy.parse(row["strategy"]).frozen_backbone]
    if not heads:
        return None, "label issues: skipped; they need a head entry (--strategy head) for its cached features"
    return max(heads, key=lambda row: row["accuracy"])["model"], None


def judge(config: RunConfig, dataset: DatasetSpec, rows: list[dict], folds, run: RunContext, run_dir: Path,
          load) -> tuple[dict | None, set[str]]:
    """Suspected label errors over every split, judged by the best head backbone's cached features (`load(name)`
    gives that backbone; its features are in the cache, so no image is decoded): (their summary or None, the
    flagged files)."""
    model_name, why_not = chosen_backbone(config, rows, folds)
    if why_not:
        run.echo(why_not)
    if model_name is None:
        return None, set()
    summary, flagged = find_issues(load(model_name), dataset, config, run, run_dir)
    run.echo(describe(summary))
    return summary, flagged


def find_issues(backbone: Backbone, dataset: DatasetSpec, config: RunConfig, run: RunContext,
                run_dir: Path) -> tuple[dict, set[str]]:
    """label_issues.csv in the run folder (rank 0); (a summary: flagged images per split, seconds; the flagged
    files' paths)."""
    start = time.perf_counter()
    splits = dataset.splits
    cached = extract_views(run.frozen, backbone, splits, [(split, False) for split in splits])
    parts = [(split, features) for (split, _), features in cached.items()]
    x = torch.cat([features.features for _, features in parts]).float()
    y = torch.cat([features.labels for _, features in parts]).numpy().astype(np.int64)
    where = [(split, int(i)) for split, features in parts for i in features.indices]
    # No dropout in these heads: on planted TF-Flowers errors it found as many (recall 0.81 against 0.79) in a
    # third of the time (1.5 s against 4.9 s), since the heads stop early (docs/label-issues-and-explain.md).
    probs = _out_of_fold_cached(x, y, len(dataset.classes), train_settings(config), run.frozen.cache_dir)
    from cleanlab.filter import find_label_issues  # pandas comes with it: imported only when used

    with warnings.catch_warnings():  # a class of one image is not judged: said once, in the summary's line
        warnings.filterwarnings("ignore", "May not flag all label issues", UserWarning)
        ranked = find_label_issues(y, probs, return_indices_ranked_by="self_confidence", n_jobs=1)
    rows = []
    for rank, i in enumerate(ranked, start=1):
        split, index = where[i]
        rows.append({"path": str(splits[split][index][0]), "split": split, "given": dataset.classes[y[i]],
                     "suggested": dataset.classes[int(probs[i].argmax())],
                     "self_confidence": round(float(probs[i, y[i]]), 4), "rank": rank})
    if distributed.is_main():
        write_csv(run_dir / LABEL_ISSUES, rows)  # nothing is written when no image is flagged
    counts = {split: {"flagged": sum(r["split"] == split for r in rows), "images": len(f.labels)}
              for split, f in parts}
    folds, images = fold_count(y, len(dataset.classes)), np.bincount(y, minlength=len(dataset.classes))
    thin = {name: int(n) for name, n in zip(dataset.classes, images) if n < folds}
    summary = {"backbone": backbone.spec.name, "flagged": len(rows), "per_split": counts, "folds": folds,
               "thin_classes": thin,
               "out_of_fold_accuracy": float((probs.argmax(1) == y).mean()), "seconds": time.perf_counter() - start}
    return summary, {row["path"] for row in rows}


def _out_of_fold_cached(x: torch.Tensor, y: np.ndarray, num_classes: int, settings: TrainSettings,
                        cache_dir: Path | None) -> np.ndarray:
    """out_of_fold's probabilities, kept beside the features they come from: the K heads are seeded and run on one
    thread, so the same features, labels and settings give the same probabilities, and a re-run reads them (the
    K trainings were a fifth of a cached TF-Flowers re-run, 2.3 s). The key is the inputs' bytes; the entry is
    checked by the checksum in its name, like every cache entry (cache.py), and recomputed with one warning line
    when it fails."""
    if cache_dir is None:
        return out_of_fold(x, y, num_classes, settings)
    hasher = hashlib.sha256(x.numpy().tobytes())
    hasher.update(y.tobytes())
    hasher.update(f"{num_classes}|{settings}|{OUT_OF_FOLD_RECIPE}|{torch.__version__}".encode())
    key = f"out-of-fold-{hasher.hexdigest()[:24]}"

    def parse(_entry: Path, data: bytes) -> np.ndarray:
        probs = np.load(io.BytesIO(data), allow_pickle=False)
        if probs.shape != (len(y), num_classes):
            raise Damaged(f"shape {probs.shape}, not {(len(y), num_classes)}")
        return probs

    probs = read_named(cache_dir, key, ".npy", parse)
    if probs is None:
        probs = out_of_fold(x, y, num_classes, settings)
        if distributed.is_main():
            buffer = io.BytesIO()
            np.save(buffer, probs, allow_pickle=False)
            write_named(cache_dir, key, ".npy", buffer.getvalue())  # a disk that refuses it costs the next run
    return probs


def describe(summary: dict) -> str:
    per_split = ", ".join(f"{split} {c['flagged']} of {c['images']}" for split, c in summary["per_split"].items())
    thin = summary.get("thin_classes", {})
    few = {name: n for name, n in thin.items() if n > 1}
    single = [name for name, n in thin.items() if n == 1]
    return (f"label issues: {summary['flagged']} image(s) flagged by cleanlab on {summary['backbone']} features "
            f"({per_split}; {summary['seconds']:.1f} s)" + (f"; listed in {LABEL_ISSUES}" if summary["flagged"] else "")
            + (f"; the out-of-fold heads behind them score only {summary['out_of_fold_accuracy']:.2f}, so many are "
               "their own mistakes" if weak_heads(summary) else "")
            + (f"; classes with fewer images than the {summary['folds']} folds, judged less surely: "
               + _some(f"{name} ({n})" for name, n in few.items()) if few else "")
            + ("; classes of a single image, not judged: " + _some(single) if single else ""))


def _some(names, shown: int = 5) -> str:
    names = list(names)
    return ", ".join(names[:shown]) + (f" and {len(names) - shown} more" if len(names) > shown else "")
