"""Two run folders of the same command give the same results: the table, every entry's metrics.json, model.json
and history.csv (times left out) and predictions.csv (byte for byte). The check of a refactoring that must not
change behaviour (issue 28, item 6): run one command on the old and on the new code, then

    python benchmarks/same_results.py RUN_BEFORE RUN_AFTER

Prints one line per file and exits 1 on any difference.
"""
from __future__ import annotations

import csv
import json
import sys
from pathlib import Path

TIMES = {"seconds", "started", "finished"}


def timeless(value):
    if isinstance(value, dict):
        return {k: timeless(v) for k, v in value.items() if not k.endswith("_seconds") and k not in TIMES}
    if isinstance(value, list):
        return [timeless(v) for v in value]
    return value


def table(path: Path) -> list[list[str]]:
    """summary.md without its 'train s' column."""
    rows = [[cell.strip() for cell in line.split("|")] for line in path.read_text().splitlines()]
    column = rows[0].index("train s")
    return [row[:column] + row[column + 1:] for row in rows]


def csv_rows(path: Path) -> list:
    with path.open(newline="", encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle))
    return [list(timeless(rows[0])) if rows else []] + [timeless(row) for row in rows]


def entry_folders(run: Path) -> list[str]:
    return sorted(str(p.parent.relative_to(run)) for p in run.rglob("metrics.json"))


def compare(a: Path, b: Path) -> int:
    checks = [("summary.md (without train s)", table), ("summary.csv (without times)", csv_rows),
              ("summary.json (without times)", lambda p: timeless(json.loads(p.read_text())))]
    results = [(label, fn(a / label.split()[0]) == fn(b / label.split()[0])) for label, fn in checks]
    folders = entry_folders(a)  # with --folds also each fold's folder
    results.append(("entry folders", folders == entry_folders(b)))
    for folder in folders:
        for name, read in (("metrics.json", lambda p: timeless(json.loads(p.read_text()))),
                           ("model.json", lambda p: json.loads(p.read_text())), ("history.csv", csv_rows),
                           ("predictions.csv", Path.read_bytes)):
            if (a / folder / name).is_file():  # a pooled --folds entry has no model of its own
                same = (b / folder / name).is_file() and read(a / folder / name) == read(b / folder / name)
                results.append((f"{folder}/{name}", same))
    for label, same in results:
        print(("same:      " if same else "DIFFERENT: ") + label)
    different = sum(not same for _, same in results)
    print("ALL IDENTICAL" if not different else f"{different} DIFFERENT")
    return 1 if different else 0


if __name__ == "__main__":
    sys.exit(compare(Path(sys.argv[1]), Path(sys.argv[2])))
