"""The top suspected label errors of a run as one contact sheet, to look at them: is the given label wrong,
ambiguous, or right after all?

Reads `label_issues.csv` of a run folder and draws the `--top` most suspect images of `--split` in a grid, each
enlarged to `--side` px (CIFAR's 32 px images are unreadable at their size) under its rank, given label and
suggested label. Prints the same rows, so a verdict can be noted beside each.

    python benchmarks/label_issue_sheet.py runs/<run> --split test --top 20 --out /tmp/sheet.png
"""
from __future__ import annotations

import argparse
import csv
from pathlib import Path

from PIL import Image, ImageDraw

from showdown.data.images import load_rgb


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run_dir", type=Path)
    parser.add_argument("--split", default="test")
    parser.add_argument("--top", type=int, default=20)
    parser.add_argument("--side", type=int, default=128)
    parser.add_argument("--columns", type=int, default=5)
    parser.add_argument("--out", type=Path, default=Path("label_issues.png"))
    args = parser.parse_args()
    with (args.run_dir / "label_issues.csv").open(newline="", encoding="utf-8") as handle:
        rows = [row for row in csv.DictReader(handle) if row["split"] == args.split][:args.top]
    caption = 30
    rows_n = -(-len(rows) // args.columns)
    sheet = Image.new("RGB", (args.columns * args.side, rows_n * (args.side + caption)), "white")
    draw = ImageDraw.Draw(sheet)
    for i, row in enumerate(rows):
        x, y = (i % args.columns) * args.side, (i // args.columns) * (args.side + caption)
        sheet.paste(load_rgb(Path(row["path"])).resize((args.side, args.side), Image.NEAREST), (x, y))
        draw.text((x + 2, y + args.side + 1), f"#{row['rank']} given {row['given']}", fill="black")
        draw.text((x + 2, y + args.side + 14), f"suggested {row['suggested']}", fill="darkred")
        print(f"{i + 1:2d}. rank {row['rank']:>5}  given {row['given']:<16} suggested {row['suggested']:<16} "
              f"self-confidence {row['self_confidence']}  {row['path']}")
    sheet.save(args.out)
    print(f"sheet: {args.out}")


if __name__ == "__main__":
    main()
