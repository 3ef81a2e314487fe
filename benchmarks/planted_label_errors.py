"""Planted label errors: how high cleanlab's label issues rank images whose label was flipped on purpose.

A copy of TF-Flowers (links, not files) with `--share` of all labels moved to another class at random (seeded)
goes through `showdown run` (one head entry, label issues on). Prints how many flipped images are among the top
2x as many flagged ones, the precision and recall of everything flagged, the seconds the label issues took and
the run's wall time, and appends them to a JSON file. The copy and its feature cache stay in --work, so a second
run measures the label-issue step on a warm cache.

    python benchmarks/planted_label_errors.py --data ../shared/datasets/tf_flowers --work /tmp/planted
"""
from __future__ import annotations

import argparse
import csv
import json
import random
import time
from pathlib import Path

from showdown import RunConfig, run
from showdown.device import CPU, device_facts


def planted_copy(source: Path, root: Path, per_class: int | None = None, share: float = 0.03,
                 seed: int = 0) -> set[str]:
    """`source` (the first `per_class` images of each class, or all) as links under `root`, with `share` of them
    in another class at random (seeded); returns the paths of the flipped links. An existing copy is kept."""
    rng = random.Random(seed)
    classes = sorted(p.name for p in source.iterdir() if p.is_dir())
    photos = [(cls, path) for cls in classes for path in sorted((source / cls).iterdir())[:per_class]]
    flipped = set(rng.sample(range(len(photos)), round(share * len(photos))))
    moved = set()
    for i, (cls, path) in enumerate(photos):
        given = rng.choice([c for c in classes if c != cls]) if i in flipped else cls
        link = root / given / path.name
        link.parent.mkdir(parents=True, exist_ok=True)
        if not link.is_symlink():
            link.symlink_to(path.resolve())
        if i in flipped:
            moved.add(str(link))
    return moved


def ranking(run_dir: Path, flipped: set[str]) -> dict:
    """Share of the flipped images among the top 2x as many flagged, and precision / recall of all flagged."""
    with (run_dir / "label_issues.csv").open(encoding="utf-8", newline="") as handle:
        rows = sorted(csv.DictReader(handle), key=lambda r: int(r["rank"]))
    top = {r["path"] for r in rows[:2 * len(flipped)]}
    flagged = {r["path"] for r in rows}
    found = len(flagged & flipped)
    return {"planted": len(flipped), "flagged": len(flagged), "recall_at_2x": len(top & flipped) / len(flipped),
            "precision": found / max(1, len(flagged)), "recall": found / len(flipped)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default="../shared/datasets/tf_flowers")
    parser.add_argument("--work", default="/tmp/showdown-planted", help="the copy, its feature cache and runs")
    parser.add_argument("--model", default="efficientnet_lite0")
    parser.add_argument("--per-class", type=int, default=None)
    parser.add_argument("--share", type=float, default=0.03)
    parser.add_argument("--json", default="docs/benchmarks/planted_label_errors.json")
    args = parser.parse_args()
    work = Path(args.work)
    flipped = planted_copy(Path(args.data), work / "data", args.per_class, args.share)
    start = time.perf_counter()
    results = run(RunConfig(data=str(work / "data"), models=[args.model], workers="auto", record=False,
                            report=False, gradcam=0, cache_dir=str(work / "cache"),
                            out=str(work / f"run-{time.strftime('%Y%m%d-%H%M%S')}")))
    wall = time.perf_counter() - start
    summary = json.loads((results.run_dir / "summary.json").read_text())
    record = {"machine": device_facts(CPU), "data": args.data, "per_class": args.per_class, "share": args.share,
              "model": args.model, **ranking(results.run_dir, flipped),
              "label_issue_seconds": round(summary["label_issues"]["seconds"], 1), "run_wall_seconds": round(wall, 1),
              "test_accuracy": results.rows[0]["accuracy"], "when": time.strftime("%Y-%m-%d %H:%M")}
    print(json.dumps(record, indent=1))
    out = Path(args.json)
    history = json.loads(out.read_text()) if out.is_file() else []
    out.write_text(json.dumps([*history, record], indent=1) + "\n")


if __name__ == "__main__":
    main()
