"""The run folder's format, in one place: its file names, the typed rows its tables hold, and the saved model's
metadata. Every writer and reader (experiment, reporting, deploy, models) goes through these names and types, so a
renamed file or column cannot silently break the report, the database, predict or resume. docs/run-folder.md
describes the folder for people.
"""
from __future__ import annotations

import csv
import dataclasses
import json
from collections.abc import Callable
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, ClassVar, get_args, get_type_hints

from showdown.errors import DamagedFileError
from showdown.fileio import write_csv

# --- the run folder --------------------------------------------------------------------------------------------
CONFIG = "config.yaml"  # the run's configuration; written last at the start, so a folder with it can be resumed
ENVIRONMENT = "environment.json"  # machine, packages, precision, runtime
DATASET = "dataset.json"  # name, root, classes, counts, split, fingerprint, warnings
SPLITS_CSV = "splits.csv"  # split, path, label: every image and its split
FOLDS_CSV = "folds.csv"  # with --folds, instead of splits.csv: every image, its test fold and its role in each fold
LEAKAGE = "leakage.csv"  # images found in more than one split (absent when none)
SUMMARY_JSON = "summary.json"  # {"rows": [EntryRow...], "skipped_files", "frozen_passes", "label_issues"}
SUMMARY_CSV = "summary.csv"  # the rows as a table
SUMMARY_MD = "summary.md"  # the printed table, as markdown
SKIPPED = "skipped.txt"  # unreadable images, one a line: the path, a tab, why
REPORT_HTML = "report.html"
REPORT_MD = "report.md"
BENCH_JSON = "bench.json"  # with --bench
BENCH_CSV = "bench.csv"
MERGE = "merge.json"  # a merged run (showdown merge): which shard gave which entries
RAY_SHARDS = "shards"  # --executor ray: a run folder per shard, and the run's own config.yaml and plan until merged
RAY_PLAN = "plan.json"  # in RAY_SHARDS: how many shards, with which resources (a resumed run keeps them)
LABEL_ISSUES = "label_issues.csv"  # path, split, given, suggested, self_confidence, rank (1 = most suspect)
WITHOUT_LABEL_ISSUES = "without-label-issues"  # --drop-label-issues: the run folder of the re-run

# --- an entry's folder ------------------------------------------------------------------------------------------
METRICS = "metrics.json"  # the EntryRow's columns plus detail (DETAIL_KEYS); written last: it marks the entry complete
HISTORY = "history.csv"  # HistoryRow per epoch
PREDICTIONS = "predictions.csv"  # PredictionRow per test image
PROBABILITIES = "probabilities.npy"  # a fold's test probabilities, rows as in its predictions.csv
CONFUSION_PLOT = "confusion.png"
CURVES_PLOT = "curves.png"
MODEL_WEIGHTS = "model.safetensors"  # the trained classifier's state dict
MODEL_INFO = "model.json"  # ModelInfo: what rebuilds the classifier and prepares its input
ENTRY_CONFIG = CONFIG  # with --tune: the tuned configuration of the entry, reusable with --config
GRADCAM_DIR = "gradcam"  # <entry>/gradcam/: overlay PNGs and their index
GRADCAM_INDEX = "gradcam.csv"  # path, png, kind (wrong/right), true, pred, confidence


SEARCH_DB = "search.db"  # with --tune: the Optuna study
CHECKPOINTS = "checkpoint-*.pt"  # only while an entry trains: what --resume continues from


def checkpoint_file(phase: str) -> str:
    return CHECKPOINTS.replace("*", phase)


def fold_folder(number: int) -> str:
    """With --folds: the entry folder of fold `number` (1-based), inside the pooled entry's folder."""
    return f"fold{number}"


# metrics.json keys that are detail, not summary-row columns
DETAIL_KEYS = ("per_class", "confusion_matrix", "classes", "setup", "tuning", "fold_metrics")


_TYPES: dict[type, dict[str, Any]] = {}
_CONVERTERS: dict[type, dict[str, Callable[[str], Any]]] = {}


class _Row:
    """Rows written as JSON or CSV: declared columns in order, None columns left out (older files lack them),
    unknown keys read back into `extra` and written again, so a newer file survives an older reader."""

    extra: dict

    @classmethod
    def _types(cls) -> dict[str, Any]:
        """The declared columns and their types, in order (worked out once per row type)."""
        if cls not in _TYPES:
            hints = get_type_hints(cls)
            _TYPES[cls] = {f.name: hints[f.name] for f in fields(cls) if f.name != "extra"}
        return _TYPES[cls]

    def to_dict(self) -> dict:
        row = {name: getattr(self, name) for name in self._types() if getattr(self, name) is not None}
        return {**row, **self.extra}

    @classmethod
    def from_dict(cls, row: dict, *, text: bool = False):
        """`text=True`: the values are CSV strings, converted to the declared types ('' is None)."""
        if text:
            row = cls.typed(row)
        types = cls._types()
        known = {k: v for k, v in row.items() if k in types}
        return cls(**known, extra={k: v for k, v in row.items() if k not in types})

    @classmethod
    def typed(cls, row: dict[str, str]) -> dict:
        """A CSV row with its declared columns converted to their types ('' is None), the others as they are."""
        if cls not in _CONVERTERS:
            _CONVERTERS[cls] = {name: _converter(kind) for name, kind in cls._types().items()}
        convert = _CONVERTERS[cls]
        return {k: (None if v in ("", None) else convert[k](v)) if k in convert else v for k, v in row.items()}


def _converter(kind) -> Callable[[str], Any]:
    base = next((t for t in (bool, int, float) if kind is t or t in get_args(kind)), str)
    if base is bool:
        return lambda value: value == "True"
    return (lambda value: int(float(value))) if base is int else base


@dataclass
class Timing:
    """Seconds per phase and cache facts of one entry; they become summary columns of the same names."""

    tune_seconds: float | None = None  # the hyperparameter search (--tune)
    feature_seconds: float | None = None  # the frozen pass: features or boundary activations
    feature_cache_hit: bool | None = None  # every feature set came from the cache
    head_seconds: float | None = None  # training the head
    finetune_seconds: float | None = None  # training the unfrozen backbone with the head
    train_seconds: float | None = None  # the whole entry, search excluded

    def columns(self) -> dict:
        return {f.name: getattr(self, f.name) for f in fields(self) if getattr(self, f.name) is not None}


@dataclass
class EntryRow(_Row):
    """One entry's summary row: a row of summary.json/.csv and the top of its metrics.json."""

    model: str
    strategy: str  # the strategy's text (Strategy.parse reads it back)
    seed: int
    accuracy: float
    loss: float
    n_test: int
    macro_precision: float
    macro_recall: float
    macro_f1: float
    weighted_precision: float
    weighted_recall: float
    weighted_f1: float
    folds: int | None = None  # with --folds: the pooled entry of all folds
    fold_accuracy_mean: float | None = None
    fold_accuracy_std: float | None = None
    tune_seconds: float | None = None  # Timing's fields, in its order
    feature_seconds: float | None = None
    feature_cache_hit: bool | None = None
    head_seconds: float | None = None
    finetune_seconds: float | None = None
    train_seconds: float | None = None
    params_m: float | None = None
    trainable_params: int | None = None
    weights: str | None = None  # where the backbone's weights came from (WeightSource's text)
    pretrained: bool | None = None
    folder: str | None = None  # the entry's folder inside the run folder (summary rows only)
    extra: dict = field(default_factory=dict)

    TIMING: ClassVar[tuple[str, ...]] = tuple(f.name for f in fields(Timing))


@dataclass
class PredictionRow(_Row):
    """One test image's prediction (predictions.csv)."""

    path: str
    true: str
    pred: str
    confidence: float
    fold: int | None = None  # with --folds: the fold that tested the image
    extra: dict = field(default_factory=dict)


@dataclass
class HistoryRow(_Row):
    """One epoch of training (history.csv)."""

    phase: str  # head, finetune, scratch; "fold N <phase>" in a pooled entry
    epoch: float | None = None  # a number like the losses (the report plots it)
    lr: float | None = None
    train_loss: float | None = None
    train_acc: float | None = None
    val_loss: float | None = None
    val_acc: float | None = None
    seconds: float | None = None
    extra: dict = field(default_factory=dict)


def write_rows(path: Path, rows: list[_Row]) -> None:
    write_csv(path, [row.to_dict() for row in rows])


def read_text_rows(path: Path) -> list[dict[str, str]]:
    """A CSV's rows as its text ([] when the file is absent)."""
    if not path.is_file():
        return []
    with path.open(encoding="utf-8", newline="") as handle:
        return list(csv.DictReader(handle))


def read_rows(path: Path, kind: type[_Row]) -> list[dict]:
    """A CSV of `kind` rows as dicts with the declared types ([] when the file is absent); DamagedFileError (one
    line) where its columns or values are not what a run writes."""
    rows = read_text_rows(path)
    required = [f.name for f in dataclasses.fields(kind)
                if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING]
    missing = [name for name in required if rows and name not in rows[0]]
    if missing:
        columns = f"column{'s' * (len(missing) > 1)} {', '.join(missing)}"
        raise DamagedFileError(f"{path} is damaged (no {columns}); run again, or restore the file")
    try:
        return [kind.typed(row) for row in rows]  # the file's columns, in its order
    except (ValueError, TypeError) as exc:  # a value of another type than its column's
        raise DamagedFileError(f"{path} is damaged ({exc}); run again, or restore the file") from exc


def resumable(folder: Path) -> bool:
    """Whether `folder` holds a run that `--resume` can go on with: its config.yaml, written last of a run's start."""
    return (folder / CONFIG).is_file()


# What a run folder holds once an entry finished, and once one trained an epoch without finishing.
_FINISHED = (SUMMARY_JSON, f"*/{METRICS}", f"*/fold*/{METRICS}")
_STARTED = (f"*/{CHECKPOINTS}", f"*/fold*/{CHECKPOINTS}")


def holds_work(folder: Path) -> bool:
    """Whether a run in `folder` got anywhere: an entry finished (its metrics.json) or one trained an epoch (its
    checkpoint). A run that stopped before (a typo in --unfreeze found once the model was built) leaves nothing
    that a new run in the same folder would write over."""
    return _holds(folder, _FINISHED + _STARTED)


def _holds(folder: Path, patterns: tuple[str, ...]) -> bool:
    return any(True for pattern in patterns for _ in folder.glob(pattern))


def what_is_kept(folder: Path, runs: list[Path] | None = None) -> str:
    """What a stopped run in `folder` leaves for --resume, in words: finished entries, an interrupted entry's last
    epochs, or only its start. `runs`: the run folders that hold its work (a Ray run's shards), else `folder`."""
    runs = [folder] if runs is None else runs
    if any(_holds(run, _FINISHED) for run in runs):
        return f"finished entries are kept in {folder}"
    if any(_holds(run, _STARTED) for run in runs):
        return f"no entry had finished; the interrupted one's last epoch is kept in {folder}"
    return f"no entry had finished in {folder}"


def read_json(path: Path, default=None):
    """The JSON in `path`, `default` where there is no such file; DamagedFileError (one line) where it is not JSON."""
    if not path.is_file():
        return default
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except ValueError as exc:  # not JSON, or not UTF-8
        raise DamagedFileError(f"{path} is damaged (not JSON: {exc}); run again, or restore the file") from exc


def summary_rows(run_dir: Path) -> list[EntryRow] | None:
    """The summary rows of a finished run folder, or None when it has no summary.json."""
    summary = read_json(run_dir / SUMMARY_JSON)
    if summary is None:
        return None
    try:
        return [EntryRow.from_dict(row) for row in summary["rows"]]
    except (KeyError, TypeError, AttributeError) as exc:  # JSON, but not a summary's
        raise DamagedFileError(f"{run_dir / SUMMARY_JSON} is damaged (no rows of results: {exc!r}); run again, "
                               "or restore the file") from exc


@dataclass
class HeadInfo:
    in_features: int
    hidden: list[int]
    dropout: float
    batch_norm: bool


@dataclass
class ModelInfo:
    """The saved model's metadata (model.json): what rebuilds the classifier and prepares its input."""

    classes: list[str]
    backbone: str  # the backbone's name (registry), or the small CNN's
    timm_kwargs: dict
    preprocessing: dict  # Preprocessing.to_dict()
    head: HeadInfo
    strategy: str
    timm_name: str | None = None  # older files: the registry's timm name for `backbone`
    pool_stages: int = 0
    weights_source: str | None = None
    tta: str = "none"
    extra: dict = field(default_factory=dict)  # keys a newer version wrote

    def to_dict(self) -> dict:
        out = {"classes": self.classes, "backbone": self.backbone, "timm_name": self.timm_name,
               "timm_kwargs": self.timm_kwargs, "pool_stages": self.pool_stages,
               "weights_source": self.weights_source, "preprocessing": self.preprocessing,
               "strategy": self.strategy, "tta": self.tta, "head": dataclasses.asdict(self.head)}
        return {**out, **self.extra}

    @classmethod
    def from_dict(cls, info: dict) -> ModelInfo:
        """Tolerant of older files: timm_name, pool_stages, weights_source and tta may be missing."""
        known = {f.name for f in fields(cls)} - {"extra", "head"}
        head = info["head"]
        return cls(**{k: v for k, v in info.items() if k in known},
                   head=HeadInfo(head["in_features"], list(head["hidden"]), head["dropout"], head["batch_norm"]),
                   extra={k: v for k, v in info.items() if k not in known | {"head"}})

    @property
    def name(self) -> str:
        return f"{self.backbone} / {self.strategy}"
