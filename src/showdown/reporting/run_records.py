"""Finished entries as plain records, read from a run folder: what the report and the database consume."""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import yaml

from showdown.errors import DamagedFileError, ShowdownError, one_line
from showdown.reporting.label_issues import read_suspects
from showdown.run_schema import (
    BENCH_JSON,
    CONFIG,
    DATASET,
    ENVIRONMENT,
    HISTORY,
    METRICS,
    PREDICTIONS,
    SUMMARY_JSON,
    HistoryRow,
    PredictionRow,
    read_json,
    read_rows,
)


@dataclass
class EntryRecord:
    """One trained (backbone, strategy, seed) with everything needed to report on it."""

    run: str  # the run folder, or "run N" for a run from the database
    folder: str
    metrics: dict  # metrics.json: summary values, per_class, confusion_matrix, classes
    history: list[dict]
    predictions: list[dict]  # path, true, pred, confidence, per test image in a fixed order
    config: dict
    environment: dict
    dataset: dict
    bench: dict | None = None
    run_id: int | None = None  # set when read from the database
    extra: dict = field(default_factory=dict)

    @property
    def model(self) -> str:
        return self.metrics["model"]

    @property
    def strategy(self) -> str:
        return self.metrics["strategy"]

    @property
    def seed(self) -> int:
        return int(self.metrics.get("seed", self.config.get("seed", 0)))

    @property
    def label(self) -> str:
        return f"{self.model} / {self.strategy}"

    def correct(self) -> list[bool]:
        return [p["true"] == p["pred"] for p in self.predictions]


def load_run(run_dir: str | Path) -> list[EntryRecord]:
    """Every finished entry of a run folder, in the order they ran. A file that is not what a run writes there (JSON
    or YAML of another shape, an entry's metrics gone) is one line naming the folder, not a traceback."""
    run_dir = Path(run_dir)
    try:
        return _load_run(run_dir)
    except (KeyError, TypeError, AttributeError, yaml.YAMLError) as exc:
        raise DamagedFileError(f"{run_dir} is damaged ({one_line(exc)}); run again, or restore its files") from exc


def _load_run(run_dir: Path) -> list[EntryRecord]:
    summary = read_json(run_dir / SUMMARY_JSON)
    if summary is None:
        raise ShowdownError(f"{run_dir} is not a finished showdown run (no summary.json)")
    config = yaml.safe_load((run_dir / CONFIG).read_text()) if (run_dir / CONFIG).is_file() else {}
    environment = read_json(run_dir / ENVIRONMENT, {})
    dataset = read_json(run_dir / DATASET, {})
    for name, value in ((CONFIG, config), (ENVIRONMENT, environment), (DATASET, dataset)):
        if not isinstance(value, dict):
            raise DamagedFileError(f"{run_dir / name} is damaged (not a mapping); run again, or restore the file")
    bench = {row["model"]: row for row in read_json(run_dir / BENCH_JSON, {"rows": []})["rows"]
             if row.get("runtime") == "torch" and row.get("precision") == "fp32"}
    suspects = read_suspects(run_dir, summary)
    extra = {"suspects": suspects} if suspects else {}
    extra["skipped"] = summary.get("skipped_files", [])  # unreadable images, left out of every entry
    rerun = (summary.get("label_issues") or {}).get("rerun")
    if rerun and (run_dir / rerun["folder"] / SUMMARY_JSON).is_file():  # --drop-label-issues
        extra["without_label_issues"] = load_run(run_dir / rerun["folder"])
    records = []
    for row in summary["rows"]:
        folder = run_dir / row["folder"]
        metrics = read_json(folder / METRICS)
        if metrics is None:
            raise DamagedFileError(f"{folder / METRICS} is missing; run again, or restore the file")
        records.append(EntryRecord(
            run=str(run_dir), folder=row["folder"], metrics=metrics,
            history=read_rows(folder / HISTORY, HistoryRow), predictions=read_rows(folder / PREDICTIONS, PredictionRow),
            config=config, environment=environment, dataset=dataset, bench=bench.get(row["model"]),
            extra=extra,
        ))
    return records
