"""Is the difference real? McNemar's exact test on paired test predictions, Holm's adjustment over the pairs
tested, bootstrap intervals of the differences and Wilson intervals of the accuracies.

Both models are scored on the same test images, so the test compares them image by image: only the images
that exactly one of them gets right (the discordant pairs) carry evidence. An entry trained with several seeds
counts, for each image, the share of its seeds that got it right: the tests are then of the mean accuracy the
leaderboard shows (a sign-flip permutation test of the per-image differences, McNemar's own with one seed).
"""
from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from statistics import NormalDist

import numpy as np
from scipy.stats import binomtest

_SAME = 1e-9  # per-image shares of seeds closer than this are equal (2/3 of 3 seeds and 4/6 of 6 differ in float)


@dataclass
class Comparison:
    a: str
    b: str
    accuracy_a: float
    accuracy_b: float
    only_a: int  # images a gets right and b gets wrong (with seeds: a gets right more often)
    only_b: int
    p_value: float
    diff_low: float  # 95 % bootstrap interval of accuracy(a) - accuracy(b)
    diff_high: float
    alpha: float = 0.05
    pairs: int = 1  # how many pairs were tested together: their p-values are adjusted for it (Holm)
    p_adjusted: float | None = None
    test: str = "McNemar"  # with seeds' shares per image: the sign-flip permutation test (mcnemar_exact)

    @property
    def significant(self) -> bool:
        return (self.p_value if self.p_adjusted is None else self.p_adjusted) < self.alpha

    def tested(self) -> str:
        """The test and its p-value, adjusted where several pairs were tested."""
        said = f"{self.test} p {p_said(self.p_value, self.alpha)}"
        if self.pairs > 1 and self.p_adjusted is not None:
            said += f", Holm-adjusted over {self.pairs} pairs p {p_said(self.p_adjusted, self.alpha)}"
        return said

    def verdict(self) -> str:
        discordant = f"{self.only_a} vs {self.only_b} discordant images"
        if self.only_a + self.only_b == 0:
            return (f"{self.a} and {self.b} are right on the same test images: not distinguishable on this data "
                    f"({self.tested()})")
        if not self.significant:  # the interval too, as the report promises: the reader sees how wide it is
            interval = "" if math.isnan(self.diff_low) else (  # NaN: no predictions to resample
                f"; accuracy difference {self.a} - {self.b} {100 * self.diff_low:+.1f} to "
                f"{100 * self.diff_high:+.1f} points, 95 % bootstrap")
            return (f"{self.a} and {self.b} are not distinguishable on this data "
                    f"({self.tested()}; {discordant}{interval})")
        better, worse = (self.a, self.b) if self.accuracy_a > self.accuracy_b else (self.b, self.a)
        # the interval is of accuracy(a) - accuracy(b): told as better minus worse, so its sign reads as the verdict
        low, high = (self.diff_low, self.diff_high) if better == self.a else (-self.diff_high, -self.diff_low)
        return (f"{better} is better than {worse} ({self.tested()}; {discordant}; accuracy difference "
                f"{100 * low:+.1f} to {100 * high:+.1f} points, 95 % bootstrap)")


def p_said(p: float, alpha: float = 0.05) -> str:
    """"= 0.012" (after a "p"): two significant digits, more where fewer would round onto `alpha` (0.0498 is not
    0.05), "< 0.0001" below that."""
    if p < 1e-4:
        return "< 0.0001"
    for digits in range(2, 7):
        text = f"{p:.{digits}g}"
        if float(text) != alpha or p == alpha:
            return f"= {text}"
    return f"< {alpha:g}" if p < alpha else f"> {alpha:g}"


def mcnemar_exact(correct_a: np.ndarray, correct_b: np.ndarray, *, resamples: int = 10_000,
                  seed: int = 0) -> tuple[int, int, float]:
    """(images a does better on, images b does better on, two-sided p). Per image 1/0 (right or wrong): McNemar's
    exact test, a binomial test on the discordant images. Per image the share of an entry's seeds that got it
    right: a sign-flip permutation test of the mean difference, so that it tests the mean accuracy the leaderboard
    ranks by (exact, as McNemar's, where every discordant image differs by as much; else `resamples` seeded
    draws). No discordant image means no evidence: p = 1."""
    correct_a, correct_b = np.asarray(correct_a, float), np.asarray(correct_b, float)
    if correct_a.shape != correct_b.shape:
        raise ValueError("McNemar needs predictions on the same test images")
    diff = correct_a - correct_b
    diff = diff[np.abs(diff) > _SAME]
    only_a, only_b = int(np.sum(diff > 0)), int(np.sum(diff < 0))
    if not len(diff):
        return only_a, only_b, 1.0
    if np.allclose(np.abs(diff), abs(diff[0])):  # one seed, or shares alike: the binomial is the exact test
        return only_a, only_b, float(binomtest(only_a, len(diff), 0.5).pvalue)
    rng, observed, hits = np.random.default_rng(seed), abs(diff.sum()) - _SAME, 0
    for start in range(0, resamples, 1000):  # a thousand draws at a time: memory stays small
        signs = rng.choice((-1.0, 1.0), size=(min(1000, resamples - start), len(diff)))
        hits += int(np.sum(np.abs(signs @ diff) >= observed))
    return only_a, only_b, (hits + 1) / (resamples + 1)


def holm(p_values: list[float]) -> list[float]:
    """Holm's step-down adjustment: p-values that keep the chance of any false "better" at alpha over them all."""
    order = sorted(range(len(p_values)), key=lambda i: p_values[i])
    adjusted, running = [0.0] * len(p_values), 0.0
    for rank, i in enumerate(order):
        running = max(running, min(1.0, (len(p_values) - rank) * p_values[i]))
        adjusted[i] = running
    return adjusted


def wilson_interval(accuracy: float, n: int, level: float = 0.95) -> tuple[float, float]:
    """Wilson's score interval of an accuracy on n test images: never of zero width at 0 or 1, as a bootstrap's
    is, and close to its level on the small test sets a percentile bootstrap covers too narrowly."""
    if n <= 0:
        return float("nan"), float("nan")
    z = NormalDist().inv_cdf(1 - (1 - level) / 2)
    scale = 1 + z * z / n
    centre = (accuracy + z * z / (2 * n)) / scale
    half = z * math.sqrt(accuracy * (1 - accuracy) / n + z * z / (4 * n * n)) / scale
    return max(0.0, centre - half), min(1.0, centre + half)


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
    """One pair: the exact test and the percentile bootstrap (2,000 resamples of the test images, seeded) of the
    difference in accuracy."""
    only_a, only_b, p = mcnemar_exact(correct_a, correct_b)
    diff = np.asarray(correct_a, float) - np.asarray(correct_b, float)
    low, high = bootstrap_ci(diff)
    shares = not all(np.isin(correct, (0, 1)).all() for correct in (correct_a, correct_b))
    return Comparison(a, b, float(np.mean(correct_a)), float(np.mean(correct_b)), only_a, only_b, p, low, high, alpha,
                      test="sign-flip permutation" if shares else "McNemar")


def adjusted(comparisons: list[Comparison]) -> list[Comparison]:
    """The pairs tested together, each with its Holm-adjusted p-value: what `significant` then goes by."""
    return [dataclasses.replace(c, pairs=len(comparisons), p_adjusted=p)
            for c, p in zip(comparisons, holm([c.p_value for c in comparisons]))]
