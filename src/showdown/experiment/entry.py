"""One entry of the showdown, top to bottom: search (with --tune), build the model, train, evaluate, write."""
from __future__ import annotations

import contextlib
import copy
import dataclasses
import re
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import NamedTuple

import torch

from showdown import distributed
from showdown.config.run_config import RunConfig
from showdown.config.strategy import HEAD, Strategy
from showdown.data import DatasetSpec
from showdown.data.thumbnails import without_centre_crop
from showdown.experiment.context import Entry, RunContext
from showdown.experiment.explanations import explain_entry
from showdown.experiment.folds import FeaturePool
from showdown.experiment.phases import CACHEABLE_AUGMENTS, Trained, evaluate, extract_all, train
from showdown.experiment.run_folder import write_entry
from showdown.experiment.tuning import describe as describe_search
from showdown.experiment.tuning import shared_study_name, tune
from showdown.models.backbones import Backbone, load_backbone
from showdown.models.backbones.found import RANDOM_SCRATCH
from showdown.models.classifier import Head, ImageClassifier
from showdown.models.small_cnn import small_cnn_backbone
from showdown.reporting.metrics import classification_metrics
from showdown.run_schema import CHECKPOINTS, SEARCH_DB
from showdown.startup import give_back_freed_memory


class EntryResult(NamedTuple):
    row: dict  # the summary row (metrics, timing, sizes)
    failed: list[str]  # unreadable image files skipped


def run_entry(strategy: Strategy, backbone: Backbone, dataset: DatasetSpec, config: RunConfig, run: RunContext,
              folder: Path, *, pool: FeaturePool | None = None, keep_probabilities: bool = False) -> EntryResult:
    entry, trained, search = train_entry(strategy, backbone, dataset, config, run, folder, pool=pool)
    probs, y_true, test_items = evaluate(entry, trained)
    row = None
    if distributed.is_main():
        # Grad-CAM's passes (torch, which lets go of the GIL) run beside the entry's files and figures (Python):
        # 0.3 s each in a cached TF-Flowers re-run. They share only the model, which neither changes.
        with ThreadPoolExecutor(1, thread_name_prefix="gradcam") as beside, _quick_gil_handover():
            explained = beside.submit(explain_entry, entry, probs, y_true, test_items, config.gradcam)
            metrics = classification_metrics(y_true, probs, dataset.classes)
            row = write_entry(entry, metrics, trained.history, probs, y_true, test_items, search, keep_probabilities,
                              written_beside=explained.result)
        for checkpoint in folder.glob(CHECKPOINTS):  # the entry is complete; its results replace them
            checkpoint.unlink()
    give_back_freed_memory()  # the next entry starts from the pages it needs, not this one's (startup.py)
    return EntryResult(distributed.broadcast(row), trained.failed)


@contextlib.contextmanager
def _quick_gil_handover(seconds: float = 0.0005):
    """Inside, a thread waiting for the GIL gets it within `seconds` instead of Python's 5 ms: Grad-CAM's thread
    needs it for a moment before each of its ~200 torch calls, while the other thread draws figures in Python."""
    interval = sys.getswitchinterval()
    sys.setswitchinterval(seconds)
    try:
        yield
    finally:
        sys.setswitchinterval(interval)


def train_entry(strategy: Strategy, backbone: Backbone, dataset: DatasetSpec, config: RunConfig, run: RunContext,
                folder: Path, *, pool: FeaturePool | None = None) -> tuple[Entry, Trained, dict | None]:
    """(the entry, its training, its search record or None): the part every process runs under torchrun."""
    if distributed.is_main():  # under torchrun rank 0 alone writes
        folder.mkdir(parents=True, exist_ok=True)
    if strategy.unfreeze:  # finetune=layers:20 names its own unfreeze
        config = dataclasses.replace(config, unfreeze=strategy.unfreeze)
    search = None
    if config.tuning:  # the chosen values become this entry's configuration
        given = config.to_dict()
        config, search = _search(strategy, backbone, dataset, config, run, folder, pool)
        run.echo(f"  {strategy}: {describe_search(search)}")
        run.reporter.tuned({key: value for key, value in config.to_dict().items() if given.get(key) != value})
    backbone, model = build_model(strategy, backbone, dataset, config, run.device)
    entry = Entry(strategy, backbone, model, dataset, config, run, folder, pool=pool)
    if search is not None:
        entry.timing.tune_seconds = search["seconds"]
    start = time.perf_counter()
    trained = train(entry)
    entry.timing.train_seconds = time.perf_counter() - start + sum(entry.earlier_seconds.values())
    return entry, trained, search


def build_model(strategy: Strategy, backbone: Backbone, dataset: DatasetSpec, config: RunConfig, device: torch.device):
    """(backbone, classifier) of an entry, seeded, on `device`. A backbone that trains is a copy, so every entry
    (seed, fold, search trial) starts from the same ImageNet weights."""
    torch.manual_seed(config.seed)
    if strategy.is_small_cnn:
        backbone = small_cnn_backbone(config.image_size)
    elif strategy.from_scratch:
        name = backbone.spec.name
        built = load_backbone(name, **{**config.backbone_options(name), "pretrained": False})
        backbone = fitted_to_images(dataclasses.replace(built, weights=RANDOM_SCRATCH), dataset)  # not --no-pretrained
    elif strategy.trains_backbone:
        backbone = copy.deepcopy(backbone)
    head = Head(backbone.num_features, len(dataset.classes), config.head_hidden, config.head_dropout, config.head_bn)
    return backbone, ImageClassifier(backbone.model, head, config.tta).to(device)


def fitted_to_images(backbone: Backbone, dataset: DatasetSpec) -> Backbone:
    """The backbone with preprocessing for this dataset: without the centre crop for small square images
    (data/thumbnails.py). The backbone given is left as it is."""
    whole = without_centre_crop(backbone.preprocessing, dataset.splits["train"])
    return backbone if whole is None else dataclasses.replace(backbone, preprocessing=whole)


def _search(strategy: Strategy, backbone: Backbone, dataset: DatasetSpec, config: RunConfig, run: RunContext,
            folder: Path, pool: FeaturePool | None) -> tuple[RunConfig, dict]:
    """`--tune`: Optuna trials of this entry's training on its training and validation splits. The trials'
    dataset has no test split at all, so no trial can read a test image."""
    seen = dataclasses.replace(dataset, splits={split: dataset.splits[split] for split in ("train", "val")})
    quiet = dataclasses.replace(run, reporter=run.reporter.muted())  # the search reports trial by trial

    def train_trial(trial_config: RunConfig, on_epoch) -> list[dict]:
        trial_backbone, model = build_model(strategy, backbone, seen, trial_config, run.device)
        entry = Entry(strategy, trial_backbone, model, seen, trial_config, quiet, folder, pool=pool,
                      checkpoints=False, on_epoch=on_epoch)
        return train(entry).history

    start = time.perf_counter()
    if strategy.frozen_backbone and config.augment in CACHEABLE_AUGMENTS:
        # The frozen backbone runs once, before the trials, so the search time is the search's alone. (A finetune
        # trial makes its features from the boundary activations it computes anyway.)
        trial_backbone, model = build_model(HEAD, backbone, seen, config, run.device)
        extract_all(Entry(HEAD, trial_backbone, model, seen, config, quiet, folder, pool=pool))
    extraction = time.perf_counter() - start
    entry = f"{folder.parent.name}-{folder.name}" if re.fullmatch(r"fold\d+", folder.name) else folder.name
    config, search = tune(config, strategy, train_trial, folder / SEARCH_DB, on_trial=run.reporter.trial,
                          study=shared_study_name(entry, seen.splits, config.seed, seen.root))
    return config, {**search, "feature_seconds": extraction}
