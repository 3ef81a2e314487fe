"""The same hyper-parameter search for every (backbone, strategy): Optuna on the validation split.

A comparison that trains every backbone with one learning rate favours whichever backbone that rate suits; the
careful published comparisons tune each model on validation data first. Every entry gets the same budget (trials
or minutes) and the same space, a seeded TPE sampler and a median pruner fed the validation loss after every
epoch. The caller's trial function trains on data without a test split (experiment.py), so the search cannot
see the test images. The study lives in SQLite in the entry folder, so `--resume` continues it.
"""
from __future__ import annotations

import dataclasses
import itertools
import math
import os
import socket
import time
from pathlib import Path
from typing import Callable

import optuna
from optuna.trial import TrialState

from showdown.config.run_config import RunConfig
from showdown.config.strategy import Strategy
from showdown.errors import ConfigError, one_line, sqlite_disk_error
from showdown.fileio import digest

# What the search may change, as the report describes it. Same for every backbone; `finetune` adds two.
SPACE = {
    "lr": "1e-4 to 1e-1, log scale",
    "weight_decay": "1e-6 to 1e-1, log scale",
    "head_dropout": "0 to 0.6",
    "head_hidden": "none, 256 or 1024 (one hidden layer)",
    "label_smoothing": "0 to 0.3",
}
FINETUNE_SPACE = {"ft_lr_factor": "0.01 to 1, log scale", "unfreeze": "blocks:1 to blocks:4"}
HIDDEN_WIDTHS = (0, 256, 1024)  # 0: no hidden layer
# The first trials sample at random (TPE needs a history); pruning waits for 5 finished trials and 2 epochs.
PRUNER = dict(n_startup_trials=5, n_warmup_steps=2)
FINISHED = (TrialState.COMPLETE, TrialState.PRUNED)

TrialFunction = Callable[[RunConfig, Callable[[float, bool], None] | None], list[dict]]


def space_for(strategy: Strategy, unfreeze: str | None = None) -> dict[str, str]:
    """What the search varies. The fine-tuned depth only where neither the strategy (`finetune=layers:20`) nor
    --unfreeze (`unfreeze`) names one: a depth the user chose is kept, its default's value included."""
    space = dict(SPACE)
    if strategy.finetunes:
        space["ft_lr_factor"] = FINETUNE_SPACE["ft_lr_factor"]
        if strategy.unfreeze is None and unfreeze is None:
            space["unfreeze"] = FINETUNE_SPACE["unfreeze"]
    return space


def _suggest(trial: optuna.Trial, space: dict) -> dict:
    trial.suggest_float("lr", 1e-4, 1e-1, log=True)
    trial.suggest_float("weight_decay", 1e-6, 1e-1, log=True)
    trial.suggest_float("head_dropout", 0.0, 0.6)
    trial.suggest_categorical("head_hidden", HIDDEN_WIDTHS)
    trial.suggest_float("label_smoothing", 0.0, 0.3)
    if "ft_lr_factor" in space:
        trial.suggest_float("ft_lr_factor", 0.01, 1.0, log=True)
    if "unfreeze" in space:
        trial.suggest_int("unfreeze_blocks", 1, 4)
    return trial.params


def config_values(params: dict) -> dict:
    """Optuna's parameters as RunConfig values."""
    values = {k: v for k, v in params.items() if k not in ("head_hidden", "unfreeze_blocks")}
    if "head_hidden" in params:
        values["head_hidden"] = [params["head_hidden"]] if params["head_hidden"] else []
    if "unfreeze_blocks" in params:
        values["unfreeze"] = f"blocks:{params['unfreeze_blocks']}"
    return values


def best_val_loss(history: list[dict]) -> float:
    """What the trained model's restored weights score: the lowest validation loss of any epoch."""
    losses = [float(h["val_loss"]) for h in history if math.isfinite(float(h["val_loss"]))]
    return min(losses, default=math.inf)


def budget(config: RunConfig, space: dict) -> dict:
    """The budget as the report compares it between entries."""
    return {"trials": config.tune or None, "minutes": config.tune_minutes, "space": sorted(space),
            "sampler": "TPE, seeded by the OS (a shared study)" if config.tune_storage is not None else
            f"TPE, seed {config.seed}", "pruner": "median on validation loss per epoch"}


def tune(config: RunConfig, strategy: Strategy, train_trial: TrialFunction, storage: Path, *,
         on_trial=None, study: str = "search") -> tuple[RunConfig, dict]:
    """Search, then (the configuration to train with, the search's record for metrics.json).

    `train_trial(config, on_epoch)` trains one configuration on the training split, calls `on_epoch(best val
    loss so far, whether the epoch ends its fit)` after each epoch and returns the epoch history. The
    configuration as given is measured first (the default); the search's best replaces it only when its
    validation loss is lower. `on_trial(number, total, best loss so far)` follows the search trial by trial
    (total None with a time budget alone).
    """
    verbosity = optuna.logging.get_verbosity()
    optuna.logging.set_verbosity(optuna.logging.ERROR)  # its "Trial failed" warning prints a Ctrl-C's traceback
    try:
        return _search(config, strategy, train_trial, storage, on_trial, study)
    except Exception as exc:  # SQLAlchemy's error for a full disk under the trials' SQLite file: one line
        disk = sqlite_disk_error(exc, storage, "the search's trials")
        if disk is None:
            raise
        raise disk from exc
    finally:
        optuna.logging.set_verbosity(verbosity)  # the caller's (a notebook's) as it was


def shared_study_name(entry: str, splits: dict, seed: int, root: Path) -> str:
    """The name of an entry's study in --tune-storage: the entry (its fold too) and a digest of the images its
    trials train and validate on (their paths below the data's `root`, as every machine of a cluster names them
    wherever it mounts the data) and of the seed, so that no other backbone, fold, split or data reads its trials
    (their validation images may be its test images)."""
    lines = [f"seed {seed}\n"] + [f"{split}|{os.path.relpath(path, root)}|{label}\n" for split in ("train", "val")
                                   for path, label in splits[split]]
    return f"{entry}-{digest(lines)[:12]}"


def _search(config: RunConfig, strategy: Strategy, train_trial: TrialFunction, storage: Path,
            on_trial, name: str) -> tuple[RunConfig, dict]:
    space = space_for(strategy, config.unfreeze)
    start = time.perf_counter()
    shared = config.tune_storage is not None
    try:
        study = optuna.create_study(storage=_storage(config.tune_storage, storage), direction="minimize",
                                    study_name=name if shared else "search", load_if_exists=True)
    except Exception as exc:  # a database driver not installed, a malformed URL, a server that does not answer
        if not shared:
            raise
        raise ConfigError(f"--tune-storage {config.tune_storage} cannot be opened: {one_line(exc)}") from exc
    if "default_val_loss" not in study.user_attrs:
        study.set_user_attr("default_val_loss", best_val_loss(train_trial(config, None)))
    done = sum(t.state in FINISHED for t in study.get_trials(deepcopy=False))
    spent = 0.0 if shared else study.user_attrs.get("seconds", 0.0)  # by an interrupted run that is now resumed
    # A resumed study seeds its sampler past the trials it has, so it does not repeat their draws. Processes that
    # share a study draw from the OS's entropy instead: seeded alike, they would start with the same trials.
    study.sampler = optuna.samplers.TPESampler(seed=None if shared else config.seed + done)
    study.pruner = optuna.pruners.MedianPruner(**PRUNER)
    # In a shared study every process runs its own --tune trials; alone, a resumed search tops its study up.
    trials = (config.tune if shared else max(config.tune - done, 0)) if config.tune else None
    timeout = config.tune_minutes * 60 - spent - (time.perf_counter() - start) if config.tune_minutes else None
    if trials != 0 and (timeout is None or timeout > 0):
        progress = _progress(on_trial, config.tune or None, 0 if shared else done) if on_trial else None

        def keep_time(study: optuna.Study, _trial) -> None:  # trial by trial: a Ctrl-C loses one trial's time at most
            study.set_user_attr("seconds", spent + time.perf_counter() - start)
        study.optimize(_objective(config, strategy, space, train_trial), n_trials=trials, timeout=timeout,
                       callbacks=[keep_time, *([progress] if progress else [])])
    seconds = spent + time.perf_counter() - start
    study.set_user_attr("seconds", seconds)
    return _choose(config, study, space, seconds, name if shared else None)


def _storage(shared: str | None, local: Path):
    """The study's storage: the entry's own SQLite file, or --tune-storage: a database URL as it is, any other
    value a journal file (Optuna's storage for a shared filesystem, where SQLite's locks are unreliable)."""
    if shared is None:
        return f"sqlite:///{local.resolve()}"
    if "://" in shared:
        return shared
    from optuna.storages import JournalStorage
    from optuna.storages.journal import JournalFileBackend

    return JournalStorage(JournalFileBackend(str(Path(shared).expanduser())))


def _objective(config: RunConfig, strategy: Strategy, space: dict, train_trial: TrialFunction):
    def objective(trial: optuna.Trial) -> float:
        values = config_values(_suggest(trial, space))
        trial_config = dataclasses.replace(config, **values)
        step, fits_left = 0, 2 if strategy.finetunes else 1  # the head's fit, then the fine-tune's

        def on_epoch(loss: float, fit_ends: bool) -> None:  # steps count epochs across the fits
            nonlocal step, fits_left
            step += 1
            fits_left -= fit_ends
            if math.isfinite(loss):
                trial.report(loss, step)
            # A trial at its last epoch (the count's, or early stopping's) is done: its loss counts.
            if fits_left > 0 and trial.should_prune():
                raise optuna.TrialPruned()

        trial.set_user_attr("process", _process())  # a shared study's trials come from several
        history = train_trial(trial_config, on_epoch)
        trial.set_user_attr("epochs", len(history))
        return best_val_loss(history)
    return objective


def _process() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


def _progress(on_trial, total: int | None, before: int):
    """on_trial(k, total, best loss) after each trial: k counts the trials this search has run, from `before` (those a
    resumed search had finished; not Optuna's trial number, which also counts the one a Ctrl-C cut short)."""
    ran = itertools.count(before + 1)

    def callback(study: optuna.Study, trial) -> None:
        losses = [t.value for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
                  if math.isfinite(t.value)]
        on_trial(next(ran), total, min(losses + [study.user_attrs["default_val_loss"]]))
    return callback


def _choose(config: RunConfig, study: optuna.Study, space: dict, seconds: float,
            shared: str | None) -> tuple[RunConfig, dict]:
    trials = [t for t in study.get_trials(deepcopy=False) if t.state in FINISHED]
    complete = [t for t in trials if t.state == TrialState.COMPLETE and math.isfinite(t.value)]
    default = study.user_attrs["default_val_loss"]
    best = min(complete, key=lambda t: t.value, default=None)
    improved = best is not None and best.value < default
    chosen = config_values(best.params) if improved else {}
    record = {
        "budget": budget(config, space),
        "space": space,
        "trials": [{"number": t.number, "state": t.state.name.lower(),
                    "value": t.value if t.state == TrialState.COMPLETE else _last(t),
                    "epochs": t.user_attrs.get("epochs", len(t.intermediate_values)), "params": t.params}
                   for t in trials],
        "n_complete": len(complete), "n_pruned": sum(t.state == TrialState.PRUNED for t in trials),
        "default_val_loss": default,
        "best_val_loss": best.value if best else None, "best_params": best.params if best else None,
        "chosen": "search" if improved else "default (no trial beat it on validation loss)" if trials else
        "default (no trial ran in the time given)",
        "values": chosen,
        "seconds": seconds,
        **({"study": shared, "n_this_process": sum(t.user_attrs.get("process") == _process() for t in trials)}
           if shared else {}),
    }
    return dataclasses.replace(config, **chosen), record


def _last(trial) -> float | None:
    """A pruned trial's last reported validation loss."""
    values = trial.intermediate_values
    return values[max(values)] if values else None


def describe(record: dict) -> str:
    """One log line: what the search found."""
    values = ", ".join(f"{k} {_short(v)}" for k, v in record["values"].items()) or "the default configuration"
    features = f" (features first: {record['feature_seconds']:.1f} s)" if record.get("feature_seconds", 0) > 1 else ""
    ran = f"{len(record['trials'])} trials ({record['n_pruned']} pruned)"
    if "n_this_process" in record:  # the time is this process's, the trials the shared study's
        ran = f"{len(record['trials'])} trials of a shared study ({record['n_this_process']} here; " \
              f"{record['n_pruned']} pruned)"
    return (f"searched {ran} in {record['seconds']:.1f} s"
            f"{features}: "
            f"validation loss {record['default_val_loss']:.4f} (default) -> "
            f"{min(record['best_val_loss'] or math.inf, record['default_val_loss']):.4f}; {values}")


def _short(value) -> str:
    return f"{value:.3g}" if isinstance(value, float) else str(value)
