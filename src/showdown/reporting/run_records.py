"""Finished entries as plain records, read from a run folder: what the report and the database consume."""
from __future__ import annotations

import csv
import json
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from showdown.errors import ShowdownError
from showdown.reporting.label_issues import read_suspects


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


def _read_csv(path: Path) -> list[dict]:
    if not path.is_file():
        return []
    with path.open(encoding="utf-8", newline="") as handle:
        rows = list(csv.DictReader(handle))
    for row in rows:
        for key, value in row.items():
            try:
                row[key] = float(value) if key != "phase" and key not in ("path", "true", "pred") else value
            except (TypeError, ValueError):
                pass
    return rows


def read_json(path: Path, default=None):
    return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else default


def load_run(run_dir: str | Path) -> list[EntryRecord]:
    """Every finished entry of a run folder, in the order they ran."""
    run_dir = Path(run_dir)
    summary = read_json(run_dir / "summary.json")
    if summary is None:
        raise ShowdownError(f"{run_dir} is not a finished showdown run (no summary.json)")
    config = yaml.safe_load((run_dir / "config.yaml").read_text()) if (run_dir / "config.yaml").is_file() else {}
    environment = read_json(run_dir / "environment.json", {})
    dataset = read_json(run_dir / "dataset.json", {})
    bench = {row["model"]: row for row in read_json(run_dir / "bench.json", {"rows": []})["rows"]
             if row.get("runtime") == "torch" and row.get("precision") == "fp32"}
    suspects = read_suspects(run_dir, summary)
    extra = {"suspects": suspects} if suspects else {}
    rerun = (summary.get("label_issues") or {}).get("rerun")
    if rerun and (run_dir / rerun["folder"] / "summary.json").is_file():  # --drop-label-issues
        extra["without_label_issues"] = load_run(run_dir / rerun["folder"])
    records = []
    for row in summary["rows"]:
        folder = run_dir / row["folder"]
        records.append(EntryRecord(
            run=str(run_dir), folder=row["folder"], metrics=read_json(folder / "metrics.json"),
            history=_read_csv(folder / "history.csv"), predictions=_read_csv(folder / "predictions.csv"),
            config=config, environment=environment, dataset=dataset, bench=bench.get(row["model"]),
            extra=extra,
        ))
    return records
