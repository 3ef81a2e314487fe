"""Is the difference real? McNemar's exact test on paired test predictions, and bootstrap intervals.

Both models are scored on the same test images, so the test compares them image by image: only the images
that exactly one of them gets right (the discordant pairs) carry evidence.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from scipy.stats import binomtest


@dataclass
class Comparison:
    a: str
    b: str
    accuracy_a: float
    accuracy_b: float
    only_a: int  # images a gets right and b gets wrong
    only_b: int
    p_value: float
    diff_low: float  # 95 % bootstrap interval of accuracy(a) - accuracy(b)
    diff_high: float
    alpha: float = 0.05

    @property
    def significant(self) -> bool:
        return self.p_value < self.alpha

    def verdict(self) -> str:
        discordant = f"{self.only_a} vs {self.only_b} discordant images"
        if not self.significant:  # the interval too, as the report promises: the reader sees how wide it is
            interval = "" if math.isnan(self.diff_low) else (  # NaN: no predictions to resample
                f"; accuracy difference {self.a} - {self.b} {100 * self.diff_low:+.1f} to "
                f"{100 * self.diff_high:+.1f} points, 95 % bootstrap")
            if self.diff_low > 0 or self.diff_high < 0:  # the interval leaves out 0 where McNemar finds nothing
                return (f"{self.a} and {self.b}: borderline, the two tests disagree (McNemar p = {self.p_value:.2g}, "
                        f"not significant; {discordant}{interval}, which leaves out 0)")
            return (f"{self.a} and {self.b} are not distinguishable on this data "
                    f"(McNemar p = {self.p_value:.2g}; {discordant}{interval})")
        better, worse = (self.a, self.b) if self.only_a > self.only_b else (self.b, self.a)
        # the interval is of accuracy(a) - accuracy(b): told as better minus worse, so its sign reads as the verdict
        low, high = (self.diff_low, self.diff_high) if better == self.a else (-self.diff_high, -self.diff_low)
        return (f"{better} is better than {worse} (McNemar p = {self.p_value:.2g}; {discordant}; accuracy "
                f"difference {100 * low:+.1f} to {100 * high:+.1f} points, 95 % bootstrap)")


def mcnemar_exact(correct_a: np.ndarray, correct_b: np.ndarray) -> tuple[int, int, float]:
    """(only a right, only b right, two-sided exact p). No discordant pairs means no evidence: p = 1."""
    correct_a, correct_b = np.asarray(correct_a, bool), np.asarray(correct_b, bool)
    if correct_a.shape != correct_b.shape:
        raise ValueError("McNemar needs predictions on the same test images")
    only_a = int(np.sum(correct_a & ~correct_b))
    only_b = int(np.sum(~correct_a & correct_b))
    if only_a + only_b == 0:
        return only_a, only_b, 1.0
    return only_a, only_b, float(binomtest(only_a, only_a + only_b, 0.5).pvalue)


def bootstrap_ci(values: np.ndarray, *, resamples: int = 2000, level: float = 0.95,
                 seed: int = 0) -> tuple[float, float]:
    """Percentile interval of the mean of `values` (1/0 per test image for accuracy, or paired differences)."""
    values = np.asarray(values, dtype=np.float64)
    if len(values) == 0:
        return float("nan"), float("nan")
    rng = np.random.default_rng(seed)
    means = values[rng.integers(0, len(values), size=(resamples, len(values)))].mean(axis=1)
    tail = (1 - level) / 2
    return float(np.quantile(means, tail)), float(np.quantile(means, 1 - tail))


def compare(a: str, correct_a: np.ndarray, b: str, correct_b: np.ndarray, alpha: float = 0.05) -> Comparison:
    only_a, only_b, p = mcnemar_exact(correct_a, correct_b)
    diff = np.asarray(correct_a, float) - np.asarray(correct_b, float)
    low, high = bootstrap_ci(diff)
    return Comparison(a, b, float(np.mean(correct_a)), float(np.mean(correct_b)), only_a, only_b, p, low, high, alpha)
