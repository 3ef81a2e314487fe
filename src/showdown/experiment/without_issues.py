"""`--drop-label-issues`: the comparison again without the images cleanlab flagged as suspected label errors.

Suspect labels can reorder a leaderboard (Northcutt et al., NeurIPS 2021): the question is whether they reorder
this one. Every entry trains again on the kept training and validation images and is tested on the kept test
images, in the run folder's without-label-issues/ (a complete run folder: summary, report, saved models); the
main report sets the two rankings side by side (reporting/label_issues.py). A head entry takes its features from
the per-split cache entries the first pass filled, so no image is decoded again for it.
"""
from __future__ import annotations

import dataclasses

import torch

from showdown.config.run_config import RunConfig
from showdown.data import DatasetSpec
from showdown.experiment.context import RunContext
from showdown.experiment.folds import FeaturePool
from showdown.frozen.feature_cache import FEATURE_BATCH, Features, extract_views
from showdown.models.backbones import Backbone


def split_pool(backbone: Backbone, dataset: DatasetSpec, config: RunConfig, run: RunContext) -> FeaturePool:
    """The features of every image of `dataset`, joined from its per-split cache entries, handed out for the
    subsets of its images the re-run trains and tests on."""
    splits = list(dataset.splits)
    items = [item for split in splits for item in dataset.splits[split]]

    def extract(_, mirror: bool) -> Features:
        views = extract_views(backbone, dataset.splits, [(split, mirror) for split in splits],
                              precision=run.precision, batch_size=FEATURE_BATCH, workers=config.worker_count,
                              cache_dir=run.cache_dir, runtime=run.runtime, device=run.device)
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
