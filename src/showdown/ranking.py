"""How entries rank wherever they are ranked (the report, the terminal table, the label-issue re-run, the winner
`predict` serves): by the mean test accuracy over their seeds, a tie in the label's order."""
from __future__ import annotations

import statistics
from collections.abc import Iterable


def same_mean(accuracy: float) -> float:
    """A mean accuracy rounded past float noise: fmean([0.8, 0.775, 0.825]) is 0.7999999999999999, a tie with
    0.8."""
    return round(accuracy, 12)


def rank_key(label: str, accuracies: Iterable[float]) -> tuple[float, str]:
    """Sort key of an entry ("model / strategy") by its seeds' accuracies: the best mean first."""
    return -same_mean(statistics.fmean(accuracies)), label
