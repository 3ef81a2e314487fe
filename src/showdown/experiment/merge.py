"""`showdown merge RUN_DIR... --out DIR`: the run folders of several shards (`--shard i/N`) become one run.

Every check comes before anything is written: the shards must share the data (its fingerprint), the split and
every setting that changes a result; the first difference is refused in one line that names it. Entry folders
are hard-linked (copied where the file system cannot link) into a folder beside --out, which then replaces --out
in one rename, so a refused or failed merge leaves --out as it was. The merged folder is a run folder like any
other: one summary.json (every shard's rows, in the order one process would have run them), the configuration of
the whole run (merged_config), the run files of the first shard, merge.json (which shard gave which entries, and
each shard's frozen passes), a report whose McNemar and bootstrap comparisons span all entries (they share the
test images), and one row in the results database.
"""
from __future__ import annotations

import dataclasses
import os
import shutil
from collections.abc import Callable
from pathlib import Path

from showdown.config.run_config import RunConfig, read_config_file
from showdown.config.strategy import DEFAULT_UNFREEZE, Strategy
from showdown.errors import ConfigError, DamagedFileError, DiskError
from showdown.experiment.resume import absolute_paths
from showdown.experiment.run_folder import write_summary
from showdown.fileio import disk_writes, write_csv, write_json
from showdown.reporting.database import default_db, record_run
from showdown.reporting.label_issues import LABEL_ISSUES
from showdown.reporting.report import report_run
from showdown.reporting.tables import format_table
from showdown.run_schema import (
    BENCH_CSV,
    BENCH_JSON,
    CONFIG,
    DATASET,
    ENVIRONMENT,
    FOLDS_CSV,
    LEAKAGE,
    MERGE,
    METRICS,
    PREDICTIONS,
    SPLITS_CSV,
    SUMMARY_JSON,
    read_json,
)

# Options that differ between the shards of one showdown without changing a result: which share, where it wrote,
# what it printed, and the machine it ran on (its paths, device and workers).
PER_SHARD = {"shard", "out", "models", "name", "db", "record", "report", "bench", "quiet", "log_file", "track",
             "device", "workers", "cache_dir", "cache_budget_gb", "boundary_disk", "data", "data_root", "weights",
             "weights_dir", "compile", "gradcam", "assert_accuracy_at_least", "executor", "ray_address"}
RUN_FILES = (ENVIRONMENT, DATASET, SPLITS_CSV, FOLDS_CSV, LEAKAGE)  # the first shard's


@dataclasses.dataclass
class Shard:
    run_dir: Path
    config: dict
    summary: dict
    dataset: dict
    environment: dict

    @property
    def folders(self) -> list[str]:
        return [row["folder"] for row in self.summary["rows"]]


def merge(run_dirs: list[str | Path], out: str | Path, *, report: bool = True, record: bool = True,
          db: str | Path | None = None, echo: Callable[[str], None] = print, keep: str | None = None,
          asked: RunConfig | None = None) -> Path:
    """Merge the shards' run folders into `out` (again: the same result); returns `out`. `keep`: a folder inside
    `out` that the merge leaves in place (--executor ray keeps its shards there). `asked`: the configuration the
    merged folder records (--executor ray: the user's, not its shards'); by default merged_config's."""
    out = Path(out)
    shards = sorted((_read(Path(d)) for d in run_dirs), key=_shard_order)
    _check_sources(shards, out)
    _check_complete(shards)
    for other in shards[1:]:
        _check_same(shards[0], other)
    rows = _merged_rows(shards)
    _check_out(out, {row["folder"] for row in rows}, keep)
    config = asked if asked is not None else merged_config(shards, report=report, record=record, db=db)
    staging = out.with_name(f".{out.name}.merging-{os.getpid()}")
    shutil.rmtree(staging, ignore_errors=True)  # a crashed merge's leftovers
    try:
        try:
            with disk_writes(out, "the merged run folder"):
                _write(shards, rows, staging, absolute_paths(dataclasses.replace(config, out=str(out))))
        except DiskError as exc:  # said of --out, not of the hidden folder it is filled in, which goes
            said = str(exc).replace(str(staging), str(out))
            raise DiskError(f"{said}; --out is as it was: {exc.cure}, then merge again", cure=exc.cure) from exc
        with disk_writes(out, "the merged run folder"):  # the swap: --out may be gone by then, so not "as it was"
            if out.exists():  # _check_out allowed only an earlier merge of exactly these entries (and `keep`)
                if keep and (out / keep).exists():
                    (out / keep).rename(staging / keep)
                shutil.rmtree(out)
            staging.rename(out)
    finally:
        if keep and (staging / keep).exists():  # a failed swap: `keep` goes back where it was
            out.mkdir(exist_ok=True)
            (staging / keep).rename(out / keep)
        shutil.rmtree(staging, ignore_errors=True)
    echo(f"merged {len(rows)} entries of {len(shards)} runs into {out}")
    echo(f"\n{format_table(rows)}\n")  # the leaderboard, as a run ends with it
    if report:
        echo(f"report: {report_run(out)[0]}")
    if record:
        echo(f"recorded as run {record_run(out, db)} in {db or default_db()}")
    return out


def _read(run_dir: Path) -> Shard:
    summary = read_json(run_dir / SUMMARY_JSON)
    if summary is None and (run_dir / CONFIG).is_file():
        raise ConfigError(f"{run_dir} is an unfinished run (no summary.json yet): `showdown run --resume {run_dir}` "
                          "finishes it, then merge")
    if summary is None or not (run_dir / CONFIG).is_file():
        raise ConfigError(f"{run_dir} is not a finished showdown run (no summary.json or config.yaml)")
    if (summary.get("label_issues") or {}).get("rerun"):
        raise ConfigError(f"{run_dir} holds a --drop-label-issues rerun, which merge cannot join (each shard judged "
                          "the labels by its own best backbone); run the shards without --drop-label-issues")
    shard = Shard(run_dir, read_config_file(run_dir / CONFIG), summary, read_json(run_dir / DATASET, {}),
                  read_json(run_dir / ENVIRONMENT, {}))
    for folder in shard.folders:  # what the merged report reads: said now, naming the shard's file, not later
        entry = run_dir / folder
        metrics = read_json(entry / METRICS)
        if not isinstance(metrics, dict):
            raise DamagedFileError(f"{entry / METRICS} is missing or damaged; run that shard again before merging")
        if "folds" not in metrics and not (entry / PREDICTIONS).is_file():
            raise DamagedFileError(f"{entry / PREDICTIONS} is missing; run that shard again before merging")
    return shard


def merged_config(shards: list[Shard], *, report: bool, record: bool, db: str | Path | None) -> RunConfig:
    """One process's configuration of the shards' run: the first shard's, with every backbone and no shard (so
    `showdown run --resume` on the merged folder keeps every entry), and the report, record and database of the
    merge, which wrote them for the whole run (a shard's own may be off, left to the merge)."""
    return RunConfig.from_dict({**shards[0].config, "shard": None, "models": _models(shards), "report": report,
                                "record": record, "db": str(db) if db else None})


def _shard_order(shard: Shard) -> int:
    """Shards by their index (a glob lists shard-10 before shard-2); runs without --shard keep their order."""
    text = shard.config.get("shard")
    return int(text.split("/")[0]) if text else 0


def _check_sources(shards: list[Shard], out: Path) -> None:
    resolved = [shard.run_dir.resolve() for shard in shards]
    for i, path in enumerate(resolved):
        if path in resolved[:i]:
            raise ConfigError(f"{shards[i].run_dir} is given twice")
        if path == out.resolve():
            raise ConfigError(f"--out {out} is one of the runs to merge; give a new folder")
    seen: dict[str, Path] = {}
    for shard in shards:
        for folder in shard.folders:
            if folder in seen:
                raise ConfigError(f"entry {folder} is in both {seen[folder]} and {shard.run_dir}; each entry may come "
                                  "from one run only")
            seen[folder] = shard.run_dir


def _check_complete(shards: list[Shard]) -> None:
    """Runs of `--shard I/N` make one run with all N of them: a shard missing (a job that failed, a glob that
    matched too little) would make a leaderboard without its backbones that looks complete."""
    given = [shard.config.get("shard") for shard in shards]
    if not any(given):
        return  # runs made without --shard: joined as they are
    counts = {text.split("/")[1] for text in given if text}
    if None in given or len(counts) != 1:
        raise ConfigError("cannot merge runs of different --shard splits "
                          f"({', '.join(text or 'unsharded' for text in given)})")
    count = counts.pop()
    missing = sorted(set(range(int(count))) - {int(text.split("/")[0]) for text in given})
    if missing:
        raise ConfigError(f"shard(s) {', '.join(f'{i}/{count}' for i in missing)} missing: merge needs every shard "
                          "of the run (run the missing ones, then merge them all)")


def _as_trained(config: dict) -> dict:
    """A run's settings as its entries trained: without a search, no --unfreeze (null, or a run from before it could
    be null) fine-tuned the default depth."""
    if config.get("tune") or config.get("tune_minutes"):
        return config
    return {**config, "unfreeze": config.get("unfreeze") or DEFAULT_UNFREEZE}


def _check_same(first: Shard, other: Shard) -> None:
    """The first difference that makes two runs' results incomparable, as one ConfigError."""
    def refuse(what: str, a, b):
        raise ConfigError(f"cannot merge {first.run_dir} and {other.run_dir}: they differ in {what} ({a} vs {b})")

    # The data first, then the settings (a different --seed also makes a different split: name the cause).
    for key, what in (("fingerprint", "data fingerprint"), ("classes", "classes")):
        if first.dataset.get(key) != other.dataset.get(key):
            refuse(what, first.dataset.get(key), other.dataset.get(key))
    ours, theirs = _as_trained(first.config), _as_trained(other.config)
    for key in sorted((set(ours) | set(theirs)) - PER_SHARD):
        if ours.get(key) != theirs.get(key):
            refuse(key, ours.get(key), theirs.get(key))
    # the shards of one --shard run split one --models list: another list (or order) is another split of the grid,
    # whose missing backbones no shard count would show; runs made without --shard join whatever they trained
    if first.config.get("shard") and first.config.get("models") != other.config.get("models"):
        refuse("models (the shards of one run split one --models list, in its order)", first.config.get("models"),
               other.config.get("models"))
    if first.environment.get("precision") != other.environment.get("precision"):
        refuse("resolved precision", first.environment.get("precision"), other.environment.get("precision"))
    for key, what in (("split", "split"), ("counts", "split sizes")):
        if first.dataset.get(key) != other.dataset.get(key):
            refuse(what, first.dataset.get(key), other.dataset.get(key))
    if _split_rows(first) != _split_rows(other):
        refuse("split (dataset.json)", "the images of its splits.csv", "those of the other's")


def _split_rows(shard: Shard) -> str:
    """The split itself (split or fold, path and label of every image): what the fingerprint and the split's
    description in dataset.json stand for, compared in full."""
    for name in (SPLITS_CSV, FOLDS_CSV):
        if (shard.run_dir / name).is_file():
            return (shard.run_dir / name).read_text(encoding="utf-8")
    return ""


def _merged_rows(shards: list[Shard]) -> list[dict]:
    """Every shard's rows in the order one process runs them: by backbone in --models order, the small CNN with
    the first backbone (a stable sort keeps each backbone's strategies and seeds in their order)."""
    models = _models(shards)
    rows = [row for shard in shards for row in shard.summary["rows"]]
    return sorted(rows, key=lambda row: models.index(row["model"]) if row["model"] in models else 0)


def _models(shards: list[Shard]) -> list[str]:
    return list(dict.fromkeys(name for shard in shards for name in shard.config.get("models", [])))


def _check_out(out: Path, folders: set[str], keep: str | None = None) -> None:
    """--out is new, empty (but for `keep`), or an earlier merge of exactly these entries (merging again replaces
    it)."""
    if not out.exists() or (out.is_dir() and not any(path.name != keep for path in out.iterdir())):
        return
    earlier = read_json(out / MERGE) if out.is_dir() else None
    if earlier is None:
        raise ConfigError(f"--out {out} already exists and is not an earlier merge; give a new folder")
    held = {folder for source in earlier["shards"] for folder in source["entries"]}
    if held != folders:
        raise ConfigError(f"--out {out} holds a merge of other entries ({', '.join(sorted(held ^ folders))} "
                          "differ); give a new folder")


def _write(shards: list[Shard], rows: list[dict], staging: Path, config: RunConfig) -> None:
    first = shards[0]
    staging.mkdir(parents=True)
    for name in RUN_FILES:
        if (first.run_dir / name).is_file():
            shutil.copy2(first.run_dir / name, staging / name)
    for shard in shards:
        for folder in shard.folders:
            shutil.copytree(shard.run_dir / folder, staging / folder, copy_function=_link_or_copy)
    config.save(staging / CONFIG)
    _write_bench(shards, staging)
    judged = _label_issues_source(shards, rows)
    if judged is not None and (judged.run_dir / LABEL_ISSUES).is_file():
        shutil.copy2(judged.run_dir / LABEL_ISSUES, staging / LABEL_ISSUES)
    passes = [shard.summary.get("frozen_passes", {}) for shard in shards]
    totals = {key: sum(p.get(key, 0) for p in passes) for key in ("hit", "miss", "images", "recomputed")}
    skipped = sorted({path for shard in shards for path in shard.summary.get("skipped_files", [])})
    write_summary(staging, rows, skipped, totals, judged.summary.get("label_issues") if judged else None)
    write_json(staging / MERGE, {"shards": [
        {"run_dir": str(shard.run_dir.resolve()), "shard": shard.config.get("shard"), "entries": shard.folders,
         "frozen_passes": shard.summary.get("frozen_passes")} for shard in shards]})


def _link_or_copy(source: str, target: str) -> None:
    """A hard link where the file system allows it (no second copy of each model), else a copy."""
    try:
        os.link(source, target)
    except OSError:
        with disk_writes(Path(target)):  # a DiskError, which copytree lets through (it gathers OSErrors)
            shutil.copy2(source, target)


def _write_bench(shards: list[Shard], staging: Path) -> None:
    """With --bench, each shard measured its own backbones: one bench.json of all their rows."""
    benches = [read_json(shard.run_dir / BENCH_JSON) for shard in shards]
    benches = [bench for bench in benches if bench]
    if benches:
        rows = [row for bench in benches for row in bench["rows"]]
        write_json(staging / BENCH_JSON, {**benches[0], "rows": rows})
        write_csv(staging / BENCH_CSV, rows)


def _label_issues_source(shards: list[Shard], rows: list[dict]) -> Shard | None:
    """The shard whose label issues the merged run keeps: the one that holds the best head entry, whose features
    one process would have judged the labels by (label_issues.chosen_backbone)."""
    heads = [row for row in rows if Strategy.parse(row["strategy"]).frozen_backbone]
    if not heads:
        return None
    best = max(heads, key=lambda row: row["accuracy"])["folder"]
    shard = next(shard for shard in shards if best in shard.folders)
    return shard if shard.summary.get("label_issues") else None
