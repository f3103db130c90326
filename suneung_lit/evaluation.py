"""Honest accuracy: intervals, the best constant predictor, and answer-balanced copies of held-out items.

Competition answers are skewed (46.7% of train answers are "1"), so a model that learns only the answer prior
looks good on a random split. Each accuracy here stands beside the best constant predictor on the same items,
and items can be scored under every cyclic shift of their choices, so that each position is right equally often.
"""

from __future__ import annotations

import math
from collections.abc import Hashable, Sequence
from dataclasses import dataclass

from suneung_lit.data.records import Item
from suneung_lit.data.shifting import cyclic_shift


@dataclass(frozen=True)
class Accuracy:
    correct: int
    total: int
    low: float  # 95% Wilson interval
    high: float

    @property
    def value(self) -> float:
        return self.correct / self.total if self.total else float("nan")

    def __str__(self) -> str:
        return f"{self.value:.3f} [{self.low:.3f}, {self.high:.3f}] (n={self.total})"


def wilson_interval(correct: int, total: int, z: float = 1.96) -> tuple[float, float]:
    """The Wilson score interval: unlike the normal approximation it stays inside [0, 1] at small n."""
    if total == 0:
        return float("nan"), float("nan")
    p = correct / total
    centre = (p + z * z / (2 * total)) / (1 + z * z / total)
    spread = z * math.sqrt(p * (1 - p) / total + z * z / (4 * total * total)) / (1 + z * z / total)
    return max(0.0, centre - spread), min(1.0, centre + spread)


def accuracy(predictions: Sequence[int], answers: Sequence[int]) -> Accuracy:
    if len(predictions) != len(answers):
        raise ValueError(f"{len(predictions)} predictions for {len(answers)} answers")
    correct = sum(int(p == a) for p, a in zip(predictions, answers, strict=True))
    return Accuracy(correct, len(answers), *wilson_interval(correct, len(answers)))


def best_constant(answers: Sequence[int], num_choices: Sequence[int]) -> tuple[int, Accuracy]:
    """The position that, always predicted, scores best on these items (items with fewer choices count wrong)."""
    best = max(range(1, max(num_choices) + 1), key=lambda position: sum(a == position for a in answers))
    return best, accuracy([best] * len(answers), answers)


def balanced_copies(items: Sequence[Item]) -> list[Item]:
    """Every item under all ``n`` cyclic shifts of its choices: each position is the answer equally often."""
    return [cyclic_shift(item, shift) for item in items for shift in range(item.num_choices)]


@dataclass(frozen=True)
class PairedDifference:
    """Run B against run A on the same rows: the rows each gets right that the other does not.

    The unit of the test is the cluster, not the row: an item's shifted copies share its passage and question, so
    they are right or wrong together more often than independent rows would be, and counting them as independent
    misstates the evidence (either way). Without clusters every row is its own unit and the test is McNemar's.
    """

    only_a: int  # rows right in A, wrong in B
    only_b: int  # rows right in B, wrong in A
    total: int  # rows
    clusters: int  # independent units (items); equals ``total`` when rows are unclustered
    standard_error: float  # of B - A, from the spread of the per-cluster differences
    p_value: float  # exact two-sided sign-flip test over clusters (McNemar's exact test when unclustered)

    @property
    def difference(self) -> float:
        return (self.only_b - self.only_a) / self.total if self.total else float("nan")

    @property
    def interval(self) -> tuple[float, float]:
        """95% interval of B - A (normal approximation over clusters)."""
        spread = 1.96 * self.standard_error
        return self.difference - spread, self.difference + spread

    def __str__(self) -> str:
        low, high = self.interval
        unit = f"{self.clusters} items, " if self.clusters != self.total else ""
        test = "sign-flip p" if self.clusters != self.total else "McNemar p"
        return (
            f"{self.difference:+.3f} [{low:+.3f}, {high:+.3f}] (B-only {self.only_b}, A-only {self.only_a}, "
            f"n={unit}{self.total}, {test}={self.p_value:.3g})"
        )


def paired_difference(
    a_correct: Sequence[bool], b_correct: Sequence[bool], clusters: Sequence[Hashable] | None = None
) -> PairedDifference:
    """Compare two runs row by row: independent intervals hide differences that pairing shows.

    ``clusters`` names each row's unit (an item id for its shifted copies); rows of a unit need not be adjacent.
    """
    if len(a_correct) != len(b_correct):
        raise ValueError(f"{len(a_correct)} items in run A, {len(b_correct)} in run B")
    if clusters is not None and len(clusters) != len(a_correct):
        raise ValueError(f"{len(clusters)} cluster labels for {len(a_correct)} rows")
    units = list(range(len(a_correct))) if clusters is None else list(clusters)
    gains: dict[Hashable, int] = {}  # per cluster: rows only B gets right minus rows only A gets right
    sizes: dict[Hashable, int] = {}
    for unit, a, b in zip(units, a_correct, b_correct, strict=True):
        gains[unit] = gains.get(unit, 0) + int(bool(b)) - int(bool(a))
        sizes[unit] = sizes.get(unit, 0) + 1
    only_a = sum(bool(a) and not b for a, b in zip(a_correct, b_correct, strict=True))
    only_b = sum(bool(b) and not a for a, b in zip(a_correct, b_correct, strict=True))
    total = len(a_correct)
    return PairedDifference(
        only_a,
        only_b,
        total,
        len(gains),
        _ratio_standard_error(gains, sizes, total),
        sign_flip_p_value(list(gains.values())),
    )


def _ratio_standard_error(gains: dict[Hashable, int], sizes: dict[Hashable, int], total: int) -> float:
    """Standard error of sum(gains) / total with clusters as the sampled units (the ratio-estimator variance)."""
    n = len(gains)
    if n < 2 or total == 0:
        return 0.0
    difference = sum(gains.values()) / total
    residuals = sum((gains[unit] - difference * sizes[unit]) ** 2 for unit in gains)
    return math.sqrt(n / (n - 1) * residuals) / total


def sign_flip_p_value(gains: Sequence[int]) -> float:
    """Exact two-sided p of a paired permutation test: under "A and B are exchangeable" each cluster's gain keeps
    or flips its sign with probability 1/2; the p-value is the share of the 2**n sign patterns whose sum is at
    least as far from zero as the observed one. Gains are integers, so the null distribution of the sum is
    counted exactly, by convolution, however many clusters there are."""
    observed = abs(sum(gains))
    weights = [abs(g) for g in gains if g]
    reach = sum(weights)
    distribution = [0.0] * (2 * reach + 1)  # index: sum + reach
    distribution[reach] = 1.0
    for weight in weights:
        shifted = [0.0] * len(distribution)
        for index, probability in enumerate(distribution):
            if probability:
                shifted[index - weight] += probability / 2
                shifted[index + weight] += probability / 2
        distribution = shifted
    tail = sum(p for index, p in enumerate(distribution) if abs(index - reach) >= observed)
    return min(1.0, tail)
