"""`--drop-label-issues`: the comparison again without the images cleanlab flagged as suspected label errors.

Suspect labels can reorder a leaderboard (Northcutt et al., NeurIPS 2021): the question is whether they reorder
this one. Every entry trains again on the kept training and validation images and is tested on the kept test
images, in the run folder's without-label-issues/ (a complete run folder: summary, report, saved models); the
main report sets the two rankings side by side (reporting/label_issues.py). A head entry takes its features from
the per-split cache entries the first pass filled, so no image is decoded again for it.
"""
from __future__ import annotations

import dataclasses
from pathlib import Path

import torch

from showdown import distributed
from showdown.config.run_config import RunConfig
from showdown.data import DatasetSpec
from showdown.data.folder import without_files
from showdown.experiment.context import RunContext
from showdown.experiment.folds import FeaturePool
from showdown.experiment.results import Results
from showdown.experiment.run_folder import write_run_start, write_summary
from showdown.frozen.feature_cache import Features, extract_views
from showdown.models.backbones import Backbone
from showdown.reporting.label_issues import WITHOUT_LABEL_ISSUES
from showdown.reporting.report import report_run
from showdown.run_schema import CONFIG


def rerun_without(config: RunConfig, dataset: DatasetSpec, flagged: set[str], run: RunContext, run_dir: Path,
                  resume: bool, all_entries) -> tuple[Results, dict[str, int]]:
    """Every entry again without the `flagged` files, in run_dir/without-label-issues/, by `all_entries` (the
    runner's loop over backbones and strategies): (its results, the images kept per split)."""
    cleaned = without_files(dataset, flagged, f"without {len(flagged)} suspected label errors")
    folder, plain = run_dir / WITHOUT_LABEL_ISSUES, rerun_config(config)
    kept = cleaned.counts()
    run.echo(f"without the {len(flagged)} suspected label errors (kept: train {kept['train']}, val {kept['val']}, "
             f"test {kept['test']}): every entry again, in {folder}")
    if distributed.is_main() and not (folder / CONFIG).is_file():
        folder.mkdir(exist_ok=True)
        write_run_start(folder, plain, cleaned, run.precision, run.runtime, None, run.device)
    rows, skipped = all_entries(plain, cleaned, None, run, folder, resume,
                                pool_of=lambda backbone: split_pool(backbone, dataset, plain, run))
    results = Results(folder, rows, sorted(skipped))
    if distributed.is_main():
        write_summary(folder, rows, results.skipped, {}, None)
        if config.report:
            report_run(folder)
    return results, kept


def split_pool(backbone: Backbone, dataset: DatasetSpec, config: RunConfig, run: RunContext) -> FeaturePool:
    """The features of every image of `dataset`, joined from its per-split cache entries, handed out for the
    subsets of its images the re-run trains and tests on."""
    splits = list(dataset.splits)
    items = [item for split in splits for item in dataset.splits[split]]

    def extract(_, mirror: bool) -> Features:
        views = extract_views(run.frozen, backbone, dataset.splits, [(split, mirror) for split in splits])
        parts, offset = [], 0
        for split in splits:  # positions in the split's list become positions in `items`
            part = views[split, mirror]
            parts.append((part, part.indices + offset))
            offset += len(dataset.splits[split])
        return Features(torch.cat([p.features for p, _ in parts]), torch.cat([p.labels for p, _ in parts]),
                        torch.cat([i for _, i in parts]), [f for p, _ in parts for f in p.failed],
                        all(p.cache_hit for p, _ in parts))

    return FeaturePool(items, extract)


def rerun_config(config: RunConfig) -> RunConfig:
    """The re-run's configuration: the same entries, no second search for label errors, no second Grad-CAM."""
    return dataclasses.replace(config, label_issues="off", drop_label_issues=False, gradcam=0, bench=False)
