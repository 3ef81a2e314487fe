"""What `--resume` goes on with, and what it checks first: the run's own configuration (its config.yaml, whatever
the flags or keywords beside it would say), and the same data as the run began with, so that every entry of it is
trained and tested on the same split."""
from __future__ import annotations

import csv
import dataclasses
import os
from pathlib import Path

from showdown import run_schema
from showdown.config.run_config import RunConfig, read_config_file
from showdown.data import DatasetSpec
from showdown.data.sources import DEMO, NAMED
from showdown.errors import ConfigError, DamagedFileError, DataError


def resumed_config(run_dir: str | Path) -> RunConfig:
    """The configuration the run in `run_dir` was started with, its folder as `out`; of a Ray run whose driver
    stopped before its merge, the one its shards' folder keeps."""
    config_file = Path(run_dir) / run_schema.CONFIG
    if not config_file.is_file() and (Path(run_dir) / run_schema.RAY_SHARDS / run_schema.CONFIG).is_file():
        config_file = Path(run_dir) / run_schema.RAY_SHARDS / run_schema.CONFIG
    if not config_file.is_file():
        raise ConfigError(f"{run_dir} is not a showdown run folder (no config.yaml)")
    values = read_config_file(config_file)
    if not {"models", "data"} <= set(values):  # every run writes them: an emptied or cut file, not changed data
        raise DamagedFileError(f"{config_file} is damaged (empty or cut short); restore it, or start a new run")
    config = RunConfig.from_dict(values)
    config.out = str(run_dir)
    return config


def resumed_from_keywords(keywords: dict) -> RunConfig:
    """`showdown.run(out=DIR, resume=True)`: the run in DIR as its config.yaml says; another keyword is refused, as
    `showdown run --resume` refuses another flag (it would be ignored, or make the entries differ)."""
    others = sorted(set(keywords) - {"out"})
    if "out" not in keywords or others:
        raise ConfigError("resume=True goes on with the run in out=DIR as its config.yaml says"
                          + (f"; {', '.join(others)} cannot change it" if others else ": give out=DIR"))
    return resumed_config(keywords["out"])


def check_same_data(run_dir: Path, dataset: DatasetSpec) -> None:
    """The data of a resumed run holds the images, labels and splits its splits.csv recorded (with --folds, the
    images and labels of its folds.csv), named from the data's root: images added, removed or relabelled since
    would give the entries still to run another split than the finished ones. File times are not compared, so a
    re-extracted archive or a copied folder is the same data."""
    recorded = _recorded_images(run_dir)
    if recorded is None:  # a run folder of an older version, or a hand-made one: nothing to compare with
        return
    folds = (run_dir / run_schema.FOLDS_CSV).is_file()
    now = {("" if folds else split, _as_written(os.path.relpath(path, dataset.root)), dataset.classes[label])
           for split, items in dataset.splits.items() for path, label in items}
    if now != recorded:
        raise DataError(f"the data of {run_dir} changed since the run began (images added, removed or moved "
                        f"between classes in {dataset.root}); its finished entries were tested on the old split, so "
                        "it cannot go on: put the data back as it was, or start a new run")


def _as_written(name: str) -> str:
    """A file name as the run's CSV files hold it: one that is not valid UTF-8 escaped (fileio.write_atomic)."""
    return name.encode("utf-8", "backslashreplace").decode("utf-8")


def _recorded_images(run_dir: Path) -> set[tuple[str, str, str]] | None:
    """(split, path from the data's root, label) of every image the run recorded; the split "" with --folds."""
    info = run_schema.read_json(run_dir / run_schema.DATASET)
    table = next((run_dir / name for name in (run_schema.SPLITS_CSV, run_schema.FOLDS_CSV)
                  if (run_dir / name).is_file()), None)
    if not isinstance(info, dict) or "root" not in info or table is None:
        return None
    with table.open(newline="", encoding="utf-8") as handle:
        try:
            return {(row.get("split", ""), os.path.relpath(row["path"], info["root"]), row["label"])
                    for row in csv.DictReader(handle)}
        except (KeyError, ValueError, csv.Error) as exc:
            raise DamagedFileError(f"{table} is damaged ({exc}); the run cannot be checked against its data") from exc


def absolute_paths(config: RunConfig) -> RunConfig:
    """`config` with every path the user typed made absolute (no link followed), as a run's config.yaml keeps it and
    Ray's shards get it: `--resume` from another folder, or a worker started in one, finds the same data, database,
    caches and search journal. A dataset's name stays a name, though a folder of that name lies here."""
    def absolute(path: str | None) -> str | None:
        return os.path.abspath(os.path.expanduser(path)) if path else path

    paths = {name: absolute(getattr(config, name)) for name in ("data_root", "weights_dir", "cache_dir", "out", "db",
                                                                 "log_file")}
    data = config.data if config.data in (DEMO, *NAMED) else absolute(config.data)
    weights = {model: absolute(file) for model, file in config.weights.items()}
    shared = config.tune_storage  # a journal file, or a database URL left as it is
    tune_storage = shared if shared is None or "://" in shared else absolute(shared)
    return dataclasses.replace(config, data=data, weights=weights, tune_storage=tune_storage, **paths)
