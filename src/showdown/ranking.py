"""How entries rank wherever they are ranked (the report, the terminal table, the label-issue re-run, the winner
`predict` serves): by the mean test accuracy over their seeds, a tie in the label's order."""
from __future__ import annotations

import statistics
from collections.abc import Callable, Iterable
from typing import TypeVar

Row = TypeVar("Row")


def same_mean(accuracy: float) -> float:
    """A mean accuracy rounded past float noise: fmean([0.8, 0.775, 0.825]) is 0.7999999999999999, a tie with
    0.8."""
    return round(accuracy, 12)


def rank_key(label: str, accuracies: Iterable[float]) -> tuple[float, str]:
    """Sort key of an entry ("model / strategy") by its seeds' accuracies: the best mean first."""
    return -same_mean(statistics.fmean(accuracies)), label


def ranked_setups(rows: Iterable[Row], label: Callable[[Row], str],
                  accuracy: Callable[[Row], float]) -> list[tuple[str, list[Row]]]:
    """The rows grouped by their entry's label (each group in the rows' order), the best mean accuracy first."""
    setups: dict[str, list[Row]] = {}
    for row in rows:
        setups.setdefault(label(row), []).append(row)
    return sorted(setups.items(), key=lambda item: rank_key(item[0], [accuracy(row) for row in item[1]]))
