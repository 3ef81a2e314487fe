"""The run folder: every number in the table can be traced to a file here."""
from __future__ import annotations

import csv
import io
import json
import os
import platform
import re
import tempfile
from datetime import datetime
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

import torch

SUMMARY_COLUMNS = [
    ("model", "model", "{}"), ("strategy", "strategy", "{}"), ("accuracy", "test acc", "{:.4f}"),
    ("loss", "loss", "{:.4f}"), ("macro_precision", "macro P", "{:.3f}"), ("macro_recall", "macro R", "{:.3f}"),
    ("macro_f1", "macro F1", "{:.3f}"), ("weighted_f1", "wtd F1", "{:.3f}"), ("train_seconds", "train s", "{:.1f}"),
    ("params_m", "params M", "{:.2f}"), ("weights", "weights", "{}"),
]


def write_atomic(path: Path, text: str) -> None:
    """Write via a temporary file and rename, so no reader sees a half-written file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    # backslashreplace: a file name that is not valid UTF-8 is written escaped instead of failing the run
    with os.fdopen(fd, "w", encoding="utf-8", errors="backslashreplace", newline="") as handle:
        handle.write(text)
    os.replace(tmp, path)


def write_json(path: Path, data) -> None:
    write_atomic(path, json.dumps(data, indent=2, default=str) + "\n")


def write_csv(path: Path, rows: list[dict]) -> None:
    if not rows:
        return
    buffer = io.StringIO()
    fields = list(dict.fromkeys(key for row in rows for key in row))  # rows of different strategies differ
    writer = csv.DictWriter(buffer, fieldnames=fields)
    writer.writeheader()
    writer.writerows(rows)
    write_atomic(path, buffer.getvalue())


def slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "-", text).strip("-") or "run"


def new_run_dir(out: str | None, name: str) -> Path:
    if out:
        path = Path(out)
    else:
        path = Path("runs") / f"{datetime.now():%Y%m%d-%H%M%S}-{slug(name)}"
        suffix = 1
        while path.exists():
            suffix += 1
            path = path.with_name(f"{path.name.rsplit('~', 1)[0]}~{suffix}")
    path.mkdir(parents=True, exist_ok=True)
    return path


def environment(precision: str, runtime: str = "torch") -> dict:
    def pkg(name):
        try:
            return version(name)
        except PackageNotFoundError:
            return None

    return {
        "python": platform.python_version(), "platform": platform.platform(), "cpu": platform.processor() or platform.machine(),
        "cpu_count": os.cpu_count(), "torch_threads": torch.get_num_threads(), "cuda": torch.cuda.is_available(),
        "precision": precision, "runtime": runtime,
        "packages": {n: pkg(n) for n in ("tl-showdown", "torch", "torchvision", "timm", "scikit-learn", "numpy", "pillow",
                                         "onnxruntime")},
    }


def format_table(rows: list[dict]) -> str:
    """The showdown table, best test accuracy first."""
    header = [title for _, title, _ in SUMMARY_COLUMNS]
    body = []
    for row in sorted(rows, key=lambda r: -r["accuracy"]):
        body.append([fmt.format(row[key]) if row.get(key) is not None else "-" for key, _, fmt in SUMMARY_COLUMNS])
    widths = [max(len(h), *(len(r[i]) for r in body)) for i, h in enumerate(header)]
    numeric = [fmt != "{}" for _, _, fmt in SUMMARY_COLUMNS]

    def line(cells):
        return "  ".join(c.rjust(w) if num else c.ljust(w) for c, w, num in zip(cells, widths, numeric)).rstrip()

    return "\n".join([line(header), line(["-" * w for w in widths]), *map(line, body)])


def format_markdown(rows: list[dict]) -> str:
    header = [title for _, title, _ in SUMMARY_COLUMNS]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for row in sorted(rows, key=lambda r: -r["accuracy"]):
        cells = [fmt.format(row[key]) if row.get(key) is not None else "-" for key, _, fmt in SUMMARY_COLUMNS]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"
