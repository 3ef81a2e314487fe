"""What `--resume` goes on with, and what it checks first: the run's own configuration (its config.yaml, whatever
the flags or keywords beside it would say), and the same data as the run began with, so that every entry of it is
trained and tested on the same split."""
from __future__ import annotations

import dataclasses
import os
from pathlib import Path

from showdown import run_schema
from showdown.config.run_config import RunConfig, read_config_file
from showdown.data import DatasetSpec
from showdown.data.sources import DEMO, NAMED
from showdown.errors import ConfigError, DataError


def resumed_config(run_dir: str | Path) -> RunConfig:
    """The configuration the run in `run_dir` was started with, its folder as `out`."""
    config_file = Path(run_dir) / run_schema.CONFIG
    if not config_file.is_file():
        raise ConfigError(f"{run_dir} is not a showdown run folder (no config.yaml)")
    config = RunConfig.from_dict(read_config_file(config_file))
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
    """The data of a resumed run has the fingerprint its dataset.json recorded: images added, removed or changed
    since would give the entries still to run another split than the finished ones."""
    recorded = run_schema.read_json(run_dir / run_schema.DATASET)
    if isinstance(recorded, dict) and recorded.get("fingerprint") not in (None, dataset.fingerprint):
        raise DataError(f"the data of {run_dir} changed since the run began (images added, removed or edited in "
                        f"{dataset.root}); its finished entries were tested on the old split, so it cannot go on: "
                        "put the data back as it was, or start a new run")


def absolute_paths(config: RunConfig) -> RunConfig:
    """`config` with every path the user typed made absolute (no link followed), as a run's config.yaml keeps it:
    `--resume` from another folder then finds the same data, database and caches."""
    def absolute(path: str | None) -> str | None:
        return os.path.abspath(os.path.expanduser(path)) if path else path

    paths = {name: absolute(getattr(config, name)) for name in ("data_root", "weights_dir", "cache_dir", "out", "db",
                                                                 "log_file")}
    data = config.data if config.data in (DEMO, *NAMED) else absolute(config.data)
    weights = {model: absolute(file) for model, file in config.weights.items()}
    return dataclasses.replace(config, data=data, weights=weights, **paths)
