"""Suspected label errors in the report: which test images are suspect, and each entry's accuracy without them.

experiment/label_issues.py writes label_issues.csv; this reads it back. A verdict that changes once the suspect
test images are left out rests on labels the data itself doubts.
"""
from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path

from showdown.ranking import ranked_setups
from showdown.run_schema import LABEL_ISSUES, WITHOUT_LABEL_ISSUES  # noqa: F401  (the names its users import)


@dataclass(frozen=True)
class Suspects:
    rows: list[dict]  # every flagged image, most suspect first
    summary: dict  # summary.json's "label_issues": backbone, flagged, per_split, seconds

    @property
    def test_paths(self) -> set[str]:
        return {row["path"] for row in self.rows if row["split"] == "test"}


# Flags worth an accuracy without them: out-of-fold heads this good, flagging at most this share of the test images
TRUSTED_HEADS, TRUSTED_SHARE = 0.7, 0.2


def weak_heads(summary: dict) -> bool:
    """Whether the out-of-fold heads behind the flags score below TRUSTED_HEADS: many flags are their mistakes."""
    judged = summary.get("out_of_fold_accuracy")
    return judged is not None and judged < TRUSTED_HEADS


def trusted(suspects: Suspects, n_test: int | None) -> bool:
    """Whether the flags are good enough to rank the entries on the test images they leave."""
    return not weak_heads(suspects.summary) and len(suspects.test_paths) <= TRUSTED_SHARE * (n_test or 0)


def read_suspects(run_dir: str | Path, summary: dict | None) -> Suspects | None:
    """The run's label issues, or None when the run looked for none (`--label-issues off`, older runs)."""
    found = (summary or {}).get("label_issues")
    if not found:
        return None
    path = Path(run_dir) / LABEL_ISSUES
    if not path.is_file():
        return Suspects([], found)
    with path.open(encoding="utf-8", newline="") as handle:
        return Suspects(list(csv.DictReader(handle)), found)


def accuracy_without(predictions: list[dict], suspect: set[str]) -> tuple[float | None, int]:
    """(accuracy on the test images that are not suspect, how many suspect images this entry was tested on)."""
    kept = [p for p in predictions if p["path"] not in suspect]
    if not kept:
        return None, len(predictions)
    return sum(p["true"] == p["pred"] for p in kept) / len(kept), len(predictions) - len(kept)


def ranking(rows: list[dict]) -> list[str]:
    """Entry labels ("model / strategy"), best mean test accuracy over the seeds first; a tie in the label's order,
    as the report breaks it."""
    return [label for label, _ in ranked_setups(rows, lambda row: f"{row['model']} / {row['strategy']}",
                                                lambda row: float(row["accuracy"]))]


def ranking_change(before: list[dict], after: list[dict]) -> str:
    """One sentence: whether the entries rank alike with and without the suspected label errors."""
    old, new = ranking(before), ranking(after)
    if old == new:
        return f"ranking without the suspected label errors: unchanged ({' > '.join(new)})"
    return f"ranking without the suspected label errors: CHANGED to {' > '.join(new)} (was {' > '.join(old)})"

