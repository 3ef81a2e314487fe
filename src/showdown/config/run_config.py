"""One flat, typed configuration for a showdown run; presets and CLI flags both fill it."""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from showdown.errors import ConfigError

STRATEGIES = ("head", "finetune", "scratch", "scratch-cnn")
AUGMENTS = ("none", "flip", "light", "strong")
TTAS = ("none", "flip")
OPTIMIZERS = ("adamw", "adam", "sgd")
SCHEDULES = ("plateau", "cosine", "onecycle")
PRECISIONS = ("auto", "fp32", "bf16")
RUNTIMES = ("auto", "torch", "onnxruntime")


def parse_unfreeze(text: str) -> tuple[str, int]:
    """`layers:N`, `blocks:K` or `all` (training/freezing.py applies it) as (kind, count)."""
    if text == "all":
        return "all", 0
    kind, _, count = text.partition(":")
    if kind not in ("layers", "blocks") or not count.isdigit() or int(count) < 1:
        raise ConfigError(f"--unfreeze '{text}' is not understood; use layers:N, blocks:K or all")
    return kind, int(count)


@dataclass
class RunConfig:
    data: str = "demo"
    data_root: str | None = None
    split: tuple[float, float, float] = (0.7, 0.15, 0.15)
    models: list[str] = field(
        default_factory=lambda: ["efficientnet_lite0", "efficientnet_lite1", "efficientnet_lite2"])
    strategies: list[str] = field(default_factory=lambda: ["head"])
    weights: dict[str, str] = field(default_factory=dict)  # model name -> weights file
    weights_dir: str | None = None
    pretrained: bool = True
    allow_random_init: bool = False
    image_size: int | None = None
    pool_stages: int = 0  # also pool the last K stages below the final features (backbones/stages.py)
    # head
    head_hidden: list[int] = field(default_factory=list)
    head_dropout: float = 0.2
    head_bn: bool = False
    # training
    optimizer: str = "adamw"
    lr: float = 1e-3
    weight_decay: float = 1e-4
    momentum: float = 0.9
    batch_size: int = 64
    epochs: int = 30
    patience: int = 5
    schedule: str = "plateau"
    label_smoothing: float = 0.1
    grad_clip: float | None = None
    augment: str = "none"
    tta: str = "none"  # test-time augmentation: "flip" averages each test image with its mirror image
    class_weight: str = "none"  # or "balanced": weight the loss by inverse class frequency
    seed: int = 0
    repeats: int = 1  # train every configuration with seeds seed, seed+1, ...; the split stays that of `seed`
    # finetune: the second phase after the head phase
    unfreeze: str = "blocks:2"
    ft_lr_factor: float = 0.1
    ft_epochs: int | None = None  # default: same as epochs
    lr_decay: float | None = None
    train_bn: bool = False
    cache_budget_gb: float | None = None  # boundary-activation cache limit, default a quarter of RAM
    # a fair showdown: the same search budget for every entry, cross-validation, a CI gate
    tune: int = 0  # Optuna trials per entry on the validation split before the final training (tuning.py)
    tune_minutes: float | None = None  # or a time budget per entry (with --tune: whichever ends first)
    folds: int | None = None  # stratified K-fold cross-validation instead of one test split (folds.py)
    assert_accuracy_at_least: float | None = None  # exit non-zero when the best test accuracy is below this
    drop_duplicates: bool = False  # drop val/test images whose exact bytes are also in an earlier split
    max_per_class: int | None = None  # train images per class (val/test get a quarter); for quick runs
    # machinery
    precision: str = "auto"
    runtime: str = "auto"  # what runs frozen layers once per image: auto, torch or onnxruntime (runtime.py)
    workers: int = 2
    cache_dir: str | None = None
    out: str | None = None
    name: str | None = None
    report: bool = True  # report.html and report.md at the end
    record: bool = True  # store the finished run in the results database
    db: str | None = None  # the results database (default: $SHOWDOWN_DB or the user's data directory)
    bench: bool = False  # measure latency, throughput and size of every model at the end (showdown bench)

    def validate(self) -> "RunConfig":
        if not self.models:
            raise ConfigError("no models given; name at least one with --models")
        for strategy in self.strategies:
            base, _, spec = strategy.partition("=")
            if spec and base == "finetune":
                parse_unfreeze(spec)
            elif spec or base not in STRATEGIES:
                raise ConfigError(f"unknown strategy '{strategy}'; choose from {', '.join(STRATEGIES)}")
        _choice("optimizer", self.optimizer, OPTIMIZERS)
        _choice("schedule", self.schedule, SCHEDULES)
        _choice("precision", self.precision, PRECISIONS)
        _choice("runtime", self.runtime, RUNTIMES)
        _choice("augment", self.augment, AUGMENTS)
        _choice("tta", self.tta, TTAS)
        _choice("class-weight", self.class_weight, ("none", "balanced"))
        parse_unfreeze(self.unfreeze)
        if len(self.split) != 3 or any(f < 0 for f in self.split) or abs(sum(self.split) - 1) > 1e-6:
            raise ConfigError("--split must be three fractions that add up to 1, e.g. 0.7,0.15,0.15 "
                              f"(got {self.split})")
        if self.split[0] <= 0:
            raise ConfigError("--split needs a training fraction above 0")
        for name, value in (("epochs", self.epochs), ("batch-size", self.batch_size), ("repeats", self.repeats)):
            if value < 1:
                raise ConfigError(f"--{name} must be at least 1 (got {value})")
        if self.lr <= 0:
            raise ConfigError(f"--lr must be positive (got {self.lr})")
        if self.tune < 0:
            raise ConfigError(f"--tune must be 0 (no search) or a number of trials (got {self.tune})")
        if self.tune_minutes is not None and self.tune_minutes <= 0:
            raise ConfigError(f"--tune-minutes must be positive (got {self.tune_minutes:g})")
        if self.folds is not None and self.folds < 2:
            raise ConfigError(f"--folds must be at least 2 (got {self.folds}); leave it out for one test split")
        gate = self.assert_accuracy_at_least
        if gate is not None and not 0 <= gate <= 1:
            raise ConfigError(f"--assert-accuracy-at-least is a test accuracy between 0 and 1 (got {gate:g})")
        if self.pool_stages < 0:
            raise ConfigError(f"--pool-stages must be 0 or more (got {self.pool_stages})")
        if self.pool_stages and any(s.startswith("finetune") for s in self.strategies):
            raise ConfigError("--pool-stages works with the head and scratch strategies, not finetune (its "
                              "frozen-bottom cache splits the plain network)")
        return self

    @property
    def tuning(self) -> bool:
        return bool(self.tune or self.tune_minutes)

    def to_dict(self) -> dict:
        out = dataclasses.asdict(self)
        out["split"] = list(self.split)
        return out

    def save(self, path: Path) -> None:
        path.write_text(yaml.safe_dump(self.to_dict(), sort_keys=False))

    @classmethod
    def from_dict(cls, values: dict) -> "RunConfig":
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ConfigError(f"unknown config key(s) {', '.join(unknown)}")
        values = dict(values)
        if "split" in values:
            values["split"] = tuple(values["split"])
        return cls(**values)


def _choice(name: str, value: str, allowed: tuple[str, ...]) -> None:
    if value not in allowed:
        raise ConfigError(f"unknown {name} '{value}'; choose from {', '.join(allowed)}")
