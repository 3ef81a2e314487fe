"""One flat, typed configuration for a showdown run; presets, config files and CLI flags all fill it.

Each field is declared once with `option(...)` (options.py): its default, help, group and the values it accepts.
The flags of `showdown run`, the reading of YAML and the checks of `validate` are all derived from these.
Long because every option is declared here, with its help, once.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path

import yaml

from showdown.config.cores import WORKERS_RULE, auto_workers, workers_valid
from showdown.config.options import check_field, definitions, from_keywords, option, read_values
from showdown.config.strategy import DEFAULT_UNFREEZE, STRATEGIES, Strategy, parse_unfreeze
from showdown.errors import ConfigError, under_torchrun
from showdown.fileio import write_atomic

AUGMENTS = ("none", "flip", "light", "strong")
TTAS = ("none", "flip")
OPTIMIZERS = ("adamw", "adam", "sgd")
SCHEDULES = ("plateau", "cosine", "onecycle")
PRECISIONS = ("auto", "fp32", "bf16", "fp16", "int8")
RUNTIMES = ("auto", "torch", "onnxruntime", "openvino")
CLASS_WEIGHTS = ("none", "balanced")
TRACKERS = ("mlflow", "tensorboard", "wandb")
LABEL_ISSUES = ("auto", "off")
EXECUTORS = ("local", "ray")

# --help groups, in the order they are listed
DATA, MODELS, TRAINING, FINETUNE, FAIR, MACHINERY, WATCH = (
    "data", "models", "head and training", "finetune (after the head phase)", "a fair comparison",
    "machinery and output", "progress and experiment trackers")

# Input size bounds. Below 32 px the backbones' 32x downsampling leaves less than one pixel of final feature map.
# Above 1024 px (the largest pretrained backbones use 600 to 800) one image is 12 MB as float32 and a batch of 64
# is 0.8 GB before any activation: far larger sizes are typos that kill a data-loading worker for lack of memory.
MIN_IMAGE_SIZE, MAX_IMAGE_SIZE = 32, 1024


@dataclass
class RunConfig:
    data: str = option("demo", "dataset name (demo, tf_flowers, cifar10, cifar100), folder or archive", group=DATA)
    data_root: str | None = option(None, "where named datasets live", group=DATA,
                                   unset="$SHOWDOWN_DATA, else data/ in the cache folder")
    split: tuple[float, float, float] = option(
        (0.7, 0.15, 0.15), "train,val,test fractions (a folder's own train/val/test split wins)", group=DATA,
        metavar="TRAIN,VAL,TEST")
    models: list[str] = option(["efficientnet_lite0", "efficientnet_lite1", "efficientnet_lite2"],
                               "comma-separated backbones (see `showdown models`)", group=MODELS, metavar="A,B,...")
    strategies: list[str] = option(
        ["head"], f"comma-separated: {', '.join(STRATEGIES)}; finetune=layers:N or finetune=blocks:K names its own "
        "--unfreeze", group=MODELS, flag="--strategy", metavar="S,S,...")
    weights: dict[str, str] = option(  # model name -> weights file
        {}, "weights file (.safetensors, .pth, .tflite, .h5, .keras); MODEL=FILE when several models run",
        group=MODELS, metavar="[MODEL=]FILE")
    weights_dir: str | None = option(None, "folder with TFLite weights", group=MODELS,
                                     unset="$SHOWDOWN_WEIGHTS, else ~/.cache/showdown/weights")
    pretrained: bool = option(True, "random init instead of pretrained weights", group=MODELS)
    allow_random_init: bool = option(
        False, "fall back to random init when no weights are found (the table marks such rows)", group=MODELS)
    image_size: int | None = option(None, "input size in pixels", group=MODELS, min=MIN_IMAGE_SIZE,
                                    max=MAX_IMAGE_SIZE, unset="the weights' input size", metavar="PX")
    pool_stages: int = option(  # also pool the last K stages below the final features (backbones/stages.py)
        0, "also feed the head the pooled outputs of the last K stages (multi-stage features; head and scratch "
        "strategies)", group=MODELS, min=0, metavar="K")
    # head
    head_hidden: list[int] = option([], "hidden layer widths of the head, e.g. 256,128", group=TRAINING, min=1,
                                    metavar="W,W,...")
    head_dropout: float = option(0.2, "dropout before every linear layer of the head", group=TRAINING, min=0, max=1)
    head_bn: bool = option(False, "batch norm in the head's hidden layers", group=TRAINING)
    # training
    optimizer: str = option("adamw", "optimizer", group=TRAINING, choices=OPTIMIZERS)
    lr: float = option(1e-3, "learning rate", group=TRAINING, above=0)
    weight_decay: float = option(1e-4, "weight decay", group=TRAINING, min=0)
    momentum: float = option(0.9, "SGD momentum", group=TRAINING, min=0, max=1)
    batch_size: int = option(64, "images per training batch", group=TRAINING, min=1)
    epochs: int = option(30, "most epochs to train (early stopping may end sooner)", group=TRAINING, min=1)
    # 0 would stop after the first epoch whatever the validation loss does
    patience: int = option(5, "early-stopping patience: epochs without a better validation loss", group=TRAINING,
                           min=1)
    schedule: str = option("plateau", "learning-rate schedule", group=TRAINING, choices=SCHEDULES)
    label_smoothing: float = option(0.1, "label smoothing of the loss", group=TRAINING, min=0, max=1)
    grad_clip: float | None = option(None, "clip the gradient norm to this", group=TRAINING, above=0,
                                     unset="no clipping")
    augment: str = option("none", "training augmentation: flip (cached mirror images), light (flip + "
                          "random-resized-crop) or strong (+ RandAugment, mixup/cutmix)", group=TRAINING,
                          choices=AUGMENTS)
    tta: str = option("none", "test-time augmentation: flip averages each test image with its mirror image",
                      group=TRAINING, choices=TTAS)
    class_weight: str = option("none", "balanced weights the loss by inverse class frequency", group=TRAINING,
                               choices=CLASS_WEIGHTS)
    seed: int = option(0, "seed of the split, the initialisation and the training", group=TRAINING, min=0,
                       max=2**32 - 1)
    repeats: int = option(1, "train every configuration with seeds seed, seed+1, ...; the split stays that of "
                          "--seed", group=TRAINING, min=1)
    # finetune: the second phase after the head phase
    unfreeze: str | None = option(None, "what fine-tuning trains: layers:N (the last N parameterised layers), "
                                  "blocks:K (the last K layer groups) or all", group=FINETUNE,
                                  unset=f"{DEFAULT_UNFREEZE}, or searched by --tune", metavar="layers:N|blocks:K|all")
    ft_lr_factor: float = option(0.1, "fine-tune lr = lr x this", group=FINETUNE, above=0)
    ft_epochs: int | None = option(None, "fine-tune epochs", group=FINETUNE, min=1, unset="--epochs")
    lr_decay: float | None = option(None, "layer-wise lr decay per layer group, e.g. 0.7", group=FINETUNE, above=0,
                                    max=1, unset="none")
    train_bn: bool = option(False, "let unfrozen batch norm update statistics", group=FINETUNE)
    activation_shift: int = option(0, "shift each cached activation map the top trains on by up to N cells at "
                                   "random (the cached analogue of a random crop; boundary cache only)",
                                   group=FINETUNE, min=0)
    cache_budget_gb: float | None = option(None, "boundary-activation cache limit in GB for the machine (under "
                                           "torchrun shared by its processes)", group=FINETUNE, above=0,
                                           unset="a quarter of RAM")
    boundary_disk: bool = option(True, "over the budget, fine-tune with the full forward instead of keeping the "
                                 "boundary activations in memory-mapped files in the cache folder", group=FINETUNE)
    # a fair showdown: the same search budget for every entry, cross-validation, a CI gate
    tune: int = option(  # tuning.py
        0, "N Optuna trials per entry on the validation split before the final training (same space and budget "
        "for every backbone)", group=FAIR, min=0, must="0 (no search) or a number of trials", metavar="N")
    tune_minutes: float | None = option(
        None, "search time per entry instead of (or with --tune, as well as) a number of trials", group=FAIR,
        above=0, metavar="M", unset="no time limit")
    tune_storage: str | None = option(  # experiment/tuning.py
        None, "one Optuna study per entry in a shared storage, so several processes or machines search it together "
        "(each runs its own --tune trials; the final training takes the study's best): a journal file on a shared "
        "filesystem (a path) or a database URL (postgresql://..., sqlite:///...)", group=FAIR, metavar="URL",
        unset="a study in each entry folder")
    folds: int | None = option(  # folds.py
        None, "stratified K-fold cross-validation instead of one test split: every image tested once", group=FAIR,
        min=2, hint="leave it out for one test split", metavar="K", unset="one test split")
    assert_accuracy_at_least: float | None = option(
        None, "exit with status 1 (after writing the results) when the best test accuracy is below X", group=FAIR,
        min=0, max=1, metavar="X", unset="no gate")
    label_issues: str = option(  # experiment/label_issues.py
        "auto", "flag images whose given label looks wrong (cleanlab on out-of-fold heads over the best head "
        "backbone's cached features; label_issues.csv, and the report's accuracy without them): auto (whenever a "
        "head entry has cached features) or off", group=FAIR, choices=LABEL_ISSUES)
    drop_label_issues: bool = option(  # experiment/without_issues.py
        False, "then run every entry again without the suspected label errors, in <run>/without-label-issues/ (a run "
        "folder of its own); the report says whether the ranking changed", group=FAIR)
    gradcam: int = option(  # experiment/explanations.py; needs the explain extra (pytorch-grad-cam)
        6, "Grad-CAM overlays per entry (where the model looked): two thirds its most confidently wrong test images, "
        "the rest right ones; in <entry>/gradcam/ and the report (the explain extra); 0 for none", group=FAIR,
        min=0, metavar="N")
    drop_duplicates: bool = option(False, "drop val/test images whose exact bytes are also in an earlier split",
                                   group=DATA)
    max_per_class: int | None = option(None, "train images per class (val and test get a quarter, at least 2), for "
                                       "quick runs", group=DATA, min=1, unset="all", metavar="N")
    # machinery
    device: str = option("auto", "auto (CUDA, else Apple MPS, else CPU), cpu, cuda, cuda:N or mps; under torchrun "
                         "each process takes the GPU of its LOCAL_RANK", group=MACHINERY, metavar="DEVICE")
    precision: str = option("auto", "auto: on a CPU bf16 only where it is native, on a GPU bf16 where supported, "
                            "else fp16 with a gradient scaler; int8: the frozen layers quantised (OpenVINO and NNCF, "
                            "calibrated on the training images; the int8 extra), the rest in fp32", group=MACHINERY,
                            choices=PRECISIONS)
    compile: bool = option(False, "torch.compile the training step (eager, with a one-line note, where it fails)",
                           group=MACHINERY)
    runtime: str = option("auto", "what runs frozen layers once per image: auto (OpenVINO when installed, else ONNX "
                          "Runtime in fp32 and PyTorch in bf16), torch, onnxruntime or openvino (the openvino "
                          "extra)", group=MACHINERY, choices=RUNTIMES)
    workers: str = option("auto", "image-decoding worker processes: a number, or auto (the CPU cores, shared by "
                          "the processes torchrun starts on this machine)", group=MACHINERY, metavar="N|auto",
                          must="a whole number from 0, or auto")
    cache_dir: str | None = option(None, "feature cache folder", group=MACHINERY, path="dir",
                                   unset="features/ in the cache folder")
    out: str | None = option(None, "run folder", group=MACHINERY, path="dir", unset="runs/<timestamp>-<name>")
    name: str | None = option(None, "run name, in the folder name and the report", group=MACHINERY,
                              unset="the dataset's name")
    report: bool = option(True, "skip report.html and report.md at the end", group=MACHINERY)
    record: bool = option(True, "do not store the finished run in the results database", group=MACHINERY)
    db: str | None = option(None, "results database", group=MACHINERY, path="file",
                            unset="$SHOWDOWN_DB, else showdown/showdown.db in $XDG_DATA_HOME or ~/.local/share")
    shard: str | None = option(  # experiment/shards.py; `showdown merge` joins the shards' run folders
        None, "train share I of N of the backbones (0-based; balanced by an estimate of each backbone's cost), in "
        "a run folder of its own; for job arrays", group=MACHINERY, metavar="I/N", unset="the whole grid")
    executor: str = option(  # experiment/ray_executor.py
        "local", "local: this process (or torchrun's); ray: shards of the backbones as tasks on a Ray cluster, "
        "merged into the run folder (the ray extra)", group=MACHINERY, choices=EXECUTORS)
    ray_address: str | None = option(None, "the Ray cluster of --executor ray", group=MACHINERY, metavar="HOST:PORT",
                                     unset="$RAY_ADDRESS, else a running cluster, else a local one")
    bench: bool = option(False, "also measure latency, throughput and size of every model (showdown bench)",
                         group=MACHINERY)
    # watching a run (reporting/progress.py, reporting/trackers.py)
    quiet: bool = option(False, "print errors and the final table only (no progress lines or bars)", group=WATCH)
    log_file: str | None = option(None, "also write every progress line here (plain lines, whatever the terminal)",
                                  group=WATCH, path="file", metavar="FILE", unset="none")
    track: list[str] = option([], "also log every entry to these experiment trackers (each an optional extra: "
                              "pip install 'tl-showdown[mlflow]')", group=WATCH, choices=TRACKERS,
                              metavar="mlflow,tensorboard,wandb")

    def validate(self) -> "RunConfig":
        """Every option of its declared type, among its choices and in its range (values are normalised, e.g. a
        list split becomes a tuple), then the rules that involve several options. One-line ConfigErrors."""
        for name in definitions(type(self)):
            setattr(self, name, check_field(self, name))
        if not self.models:
            raise ConfigError("no models given; name at least one with --models")
        if not self.strategies:
            raise ConfigError(f"no strategies given; name at least one with --strategy ({', '.join(STRATEGIES)})")
        strategies = self.strategy_values()
        for flag, values in (("--models", list(self.models)), ("--strategy", [str(s) for s in strategies])):
            if len(set(values)) < len(values):  # the second would train again and overwrite the first's folder
                raise ConfigError(f"{flag} names {', '.join(sorted({v for v in values if values.count(v) > 1}))} "
                                  "more than once; give each once (--repeats trains more seeds)")
        if self.unfreeze is not None:
            parse_unfreeze(self.unfreeze)
        if len(self.split) != 3 or any(f < 0 for f in self.split) or abs(sum(self.split) - 1) > 1e-6:
            raise ConfigError("--split must be three fractions that add up to 1, e.g. 0.7,0.15,0.15 "
                              f"(got {','.join(f'{f:g}' for f in self.split)})")
        if self.split[0] <= 0:
            raise ConfigError("--split needs a training fraction above 0")
        if not workers_valid(self.workers):
            raise ConfigError(f"--workers must be {WORKERS_RULE} (got '{self.workers}')")
        if self.pool_stages and any(s.finetunes for s in strategies):
            raise ConfigError("--pool-stages works with the head and scratch strategies, not finetune (its "
                              "frozen-bottom cache splits the plain network)")
        if self.drop_label_issues and (self.label_issues == "off" or self.folds):
            raise ConfigError("--drop-label-issues needs the label issues of one test split: leave out "
                              + ("--label-issues off" if self.label_issues == "off" else "--folds"))
        if self.tune_storage is not None and not (self.tune_storage.strip() and (self.tune or self.tune_minutes)):
            raise ConfigError("--tune-storage shares a search: a journal file or a database URL, with --tune N (or "
                              "--tune-minutes M)" + ("; it is empty" if not self.tune_storage.strip() else ""))
        if self.shard is not None:
            self._check_shard()
        if self.executor == "ray" and self.shard is not None:
            raise ConfigError("--executor ray makes its own shards; leave out --shard")
        if self.executor == "ray" and self.drop_label_issues:  # merge cannot join the shards' re-runs
            raise ConfigError("--drop-label-issues runs in one process; leave out --executor ray")
        if under_torchrun() and (self.tuning or self.executor == "ray"):  # every rank would run all of it
            raise ConfigError("--tune runs in one process; start it without torchrun (the tuned entry can then be "
                              "trained under torchrun with the chosen values, from its config.yaml)" if self.tuning
                              else "--executor ray starts its own processes; start it without torchrun")
        return self

    def _check_shard(self) -> None:
        index, _, count = self.shard.partition("/")
        if not (index.isdigit() and count.isdigit() and int(index) < int(count)):
            raise ConfigError(f"--shard must be I/N with 0 <= I < N, e.g. 0/4 (got '{self.shard}')")
        if int(count) > len(self.models):
            raise ConfigError(f"--shard {self.shard}: {count} shards for {len(self.models)} backbones would leave a "
                              f"shard without work; use at most {len(self.models)} shards")

    @property
    def shard_index(self) -> tuple[int, int]:
        """--shard I/N as (I, N); validate() has checked it."""
        index, count = self.shard.split("/")
        return int(index), int(count)

    @property
    def worker_count(self) -> int:
        """Image-decoding workers per process: `auto` shares this machine's cores among the processes torchrun
        started on it (LOCAL_WORLD_SIZE), at most 8 each."""
        if self.workers != "auto":
            return int(self.workers)
        from showdown import distributed  # here: the CLI imports this module before torch (startup.py)

        return auto_workers(distributed.local_processes())

    def strategy_values(self) -> list[Strategy]:
        """The strategies parsed (one-line ConfigErrors); the field keeps their text, as flags and files give it."""
        return [Strategy.parse(text) for text in self.strategies]

    def backbone_options(self, model_name: str) -> dict:
        """load_backbone's keyword arguments for `model_name`, from one place: the run, the bench and a scratch
        entry load backbones alike (copying these fields is how --bench once missed --pool-stages)."""
        return {"weights_file": self.weights.get(model_name), "weights_dir": self.weights_dir,
                "pretrained": self.pretrained, "allow_random_init": self.allow_random_init,
                "image_size": self.image_size, "pool_stages": self.pool_stages}

    @property
    def tuning(self) -> bool:
        return bool(self.tune or self.tune_minutes)

    def to_dict(self) -> dict:
        out = dataclasses.asdict(self)
        out["split"] = list(self.split)
        return out

    def save(self, path: Path) -> None:
        write_atomic(path, yaml.safe_dump(self.to_dict(), sort_keys=False), "the configuration")

    @classmethod
    def from_keywords(cls, keywords: dict, base: "RunConfig | None" = None) -> "RunConfig":
        """`showdown.run(data=..., models=[...], strategy=[...], lr=...)`: the flags' names with _ for -."""
        return from_keywords(cls, keywords, base)

    @classmethod
    def from_dict(cls, values: dict, *, source: str | None = None) -> "RunConfig":
        """From a mapping (a YAML file, a preset, a run's config.yaml): unknown keys and values of the wrong type
        are one-line ConfigErrors naming `source`; ranges are checked by validate()."""
        return cls(**read_values(cls, values, source))


def read_config_file(path: str | Path) -> dict:
    """The values of a YAML config file (`--config`), checked against the options; one-line ConfigErrors."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"cannot read config file {path}: {exc.strerror or exc}") from None
    except UnicodeDecodeError:
        raise ConfigError(f"config file {path} is not UTF-8 text; write it as YAML, such as `lr: 0.01`") from None
    try:
        values = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(exc, "problem", None) or "not valid YAML"
        raise ConfigError(f"config file {path} is not valid YAML{where}: {problem}") from None
    return read_values(RunConfig, {} if values is None else values, f"config file {path}")


def weights_map(entries: list[str], models: list[str]) -> dict[str, str]:
    """--weights entries ([MODEL=]FILE) as model name -> file; a bare FILE needs exactly one model."""
    mapping = {}
    for entry in entries:
        name, sep, path = entry.partition("=")
        if sep and name in models:
            mapping[name] = path
        elif sep and not Path(entry).exists():  # MODEL=FILE for a model not in the run, not a file named so
            raise ConfigError(f"--weights {entry}: {name} is not one of the run's models ({', '.join(models)})")
        elif len(models) == 1:
            mapping[models[0]] = entry
        else:
            raise ConfigError(f"--weights {entry}: with several models, write MODEL=FILE (models: {', '.join(models)})")
    return mapping
