"""The explicit context of an entry: what its phases read, in one object instead of a long argument list."""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from sklearn.utils.class_weight import compute_class_weight

from showdown.config.run_config import RunConfig
from showdown.config.strategy import Strategy
from showdown.data import DatasetSpec
from showdown.experiment.folds import FeaturePool
from showdown.frozen.frozen_pass import FrozenPass
from showdown.models.backbones import Backbone
from showdown.models.classifier import ImageClassifier
from showdown.reporting.progress import Reporter
from showdown.run_schema import Timing, checkpoint_file
from showdown.training.batches import ImageBatches, image_batches
from showdown.training.loop import fit


@dataclass(frozen=True)
class RunContext:
    """What every entry of one run shares: how frozen layers run (their settings, the engines they built, their
    counts: frozen/frozen_pass.py), and where to tell."""

    frozen: FrozenPass = field(default_factory=FrozenPass)
    reporter: Reporter = field(default_factory=Reporter)  # progress, log lines, trackers; silent but on rank 0

    @property
    def precision(self) -> str:
        return self.frozen.precision

    @property
    def runtime(self) -> str:
        return self.frozen.runtime

    @property
    def device(self) -> torch.device:
        return self.frozen.device

    def echo(self, line: str = "") -> None:
        self.reporter.echo(line)


@dataclass
class Entry:
    """One (backbone, strategy, seed[, fold]) being trained, and everything its phases share."""

    strategy: Strategy
    backbone: Backbone
    model: ImageClassifier
    dataset: DatasetSpec
    config: RunConfig
    run: RunContext
    folder: Path
    pool: FeaturePool | None = None  # with --folds: every image's features, extracted once for all folds
    checkpoints: bool = True  # a search trial writes none (it is repeated, not resumed)
    on_epoch: Callable | None = None  # after every epoch: (best validation loss, fit ends) for the search's pruner
    timing: Timing = field(default_factory=Timing)  # seconds per phase and cache facts, for the summary row
    # per phase, the seconds of the epochs a checkpoint brought back (--resume): the phase's time counts them, as
    # the uninterrupted run's does
    earlier_seconds: dict[str, float] = field(default_factory=dict)

    def checkpoint(self, phase: str) -> Path | None:
        return self.folder / checkpoint_file(phase) if self.checkpoints else None

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
        """`parallel=True`: the batches are shares of this process (torchrun) and the net trains as one DDP model."""
        ran = []  # the epochs trained here; the others came back from a checkpoint

        def progress(row: dict) -> None:
            ran.append(row)
            self.run.reporter.epoch(row)

        history = fit(net, train_batches, val_batches, settings, phase=phase, checkpoint=self.checkpoint(phase),
                      class_weights=self.class_weights(), num_classes=len(self.dataset.classes),
                      on_epoch=self.on_epoch, progress=progress, **kwargs)
        self.earlier_seconds[phase] = sum(row["seconds"] for row in history[:len(history) - len(ran)])
        return history

    def images(self, split: str, *, train: bool = False) -> ImageBatches:
        """Batches of decoded images; under torchrun this process's share (every image pass is data parallel)."""
        return image_batches(self.dataset.splits[split], self.backbone.preprocessing, self.config, train=train,
                             split=True, pin_memory=self.run.device.type == "cuda")
