"""Checks before the work: what would fail at the end of a run (a damaged results database, a run folder that
takes no file, a disk too small for the models) fails at its start, in one line, before an image is decoded.

Under torchrun rank 0 checks (it alone writes) and its verdict holds on every rank.
"""
from __future__ import annotations

import logging
import os
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

from showdown import distributed, run_schema
from showdown.cache import kind_folders
from showdown.config.run_config import RunConfig
from showdown.config.strategy import Strategy
from showdown.errors import ConfigError, DiskError, ModelError, ShowdownError, flag_or_keyword, resume_call
from showdown.experiment.shards import my_models
from showdown.fileio import check_writable, nearest_existing
from showdown.models.backbones import Backbone, resolve_backbone, weights_missing
from showdown.models.small_cnn import SmallCNN
from showdown.reporting.database import check_database, other_in

log = logging.getLogger(__name__)
T = TypeVar("T")
# What an entry writes besides its model (plots, predictions, history, metrics): a few hundred KB at most.
ENTRY_FILES = 2**18


def on_main(check: Callable[..., T], *args) -> T:
    """`check(*args)` on rank 0; its result, or its one-line error, on every rank (they would wait for rank 0)."""
    result, error = None, None
    if distributed.is_main():
        try:
            result = check(*args)
        except ShowdownError as exc:
            error = exc
    result, error = distributed.broadcast((result, error))
    if error is not None:
        raise error
    return result


def check_places(config: RunConfig, resume: bool = False) -> tuple[Path | None, bool]:
    """The results database (opened, integrity and schema checked, created when new) and the run folder's place
    (takes a file; a new run's --out holds no run that got anywhere already) fail the run now; a feature cache
    folder that takes no file is one warning, and the run goes on reading the entries it holds (a read-only share
    of features computed once), keeping no new one. Returns (the feature cache folder to use, None for none;
    whether it takes new files)."""
    out = Path(config.out) if config.out else None
    if config.record:  # --resume takes no --db: the run's config.yaml says where it records
        check_database(config.db, other_in(out / run_schema.CONFIG) if resume else "")
    if out and not resume and run_schema.resumable(out) and run_schema.holds_work(out):  # work would be lost
        named = flag_or_keyword(f"--out {config.out}", f"out={config.out!r}")
        raise ConfigError(f"{named} holds a run already; {resume_call(config.out)} goes on with it, or name a new "
                          "folder")
    check_writable(Path(config.out or "runs"), "the run folder")
    cache_dir = Path(config.cache_dir) if config.cache_dir else kind_folders()["features"]
    try:
        check_writable(cache_dir, "the feature cache folder")
    except DiskError as exc:
        if cache_dir.is_dir() and os.access(cache_dir, os.R_OK | os.X_OK):  # another user's private folder: no
            log.warning("%s; the run reads the entries it holds and keeps no new one", exc)
            return cache_dir, False
        log.warning("%s; the run goes on without a feature cache", exc)
        return None, True
    return cache_dir, True


def check_names(config: RunConfig) -> None:
    """An unknown backbone name fails before any work is done (here, before Ray runs a shard of them)."""
    for name in config.models:
        resolve_backbone(name)


def check_weights(config: RunConfig) -> None:
    """Every backbone this process will load has weights: one without fails before the first one trains, not
    after it (a run of several used to stop after the others' work). A new run's only: a resumed one loads just
    the backbones of its unfinished entries, and its loader says so for those; the small CNN loads none."""
    if all(strategy.is_small_cnn for strategy in config.strategy_values()):
        return
    for name in my_models(config):
        if missing := weights_missing(name, **config.backbone_options(name)):
            raise ModelError(missing)


def model_bytes(module) -> int:
    return sum(t.numel() * t.element_size() for t in (*module.parameters(), *module.buffers()))


def check_space(run_dir: Path, backbone: Backbone, strategies: list[Strategy], folds: int | None) -> None:
    """A DiskError when the run folder's disk has less room than the entries of `backbone` still to run will
    surely write: each one's model (a head's includes its frozen backbone), and one checkpoint at a time."""
    size = model_bytes(backbone.model)
    models = [model_bytes(SmallCNN()) if s.is_small_cnn else size for s in strategies]
    checkpoint = max((m for m, s in zip(models, strategies) if s.trains_backbone), default=0)
    need = (sum(models) + ENTRY_FILES * len(models)) * (folds or 1) + checkpoint
    free = shutil.disk_usage(nearest_existing(run_dir)).free
    if free < need:
        entries = f"{len(strategies)} entr{'y' if len(strategies) == 1 else 'ies'}" + f" x {folds} folds" * bool(folds)
        raise DiskError(f"no space left for {backbone.spec.name}'s {entries} in {run_dir}: {free / 2**20:.1f} MB "
                        f"free, they write at least {need / 2**20:.1f} MB (models and a checkpoint)")
