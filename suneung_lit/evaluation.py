"""Honest accuracy: intervals, the best constant predictor, and answer-balanced copies of held-out items.

Competition answers are skewed (46.7% of train answers are "1"), so a model that learns only the answer prior
looks good on a random split. Each accuracy here stands beside the best constant predictor on the same items,
and items can be scored under every cyclic shift of their choices, so that each position is right equally often.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
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
    """Run B against run A on the same items: the items each gets right that the other does not."""

    only_a: int  # right in A, wrong in B
    only_b: int  # right in B, wrong in A
    total: int
    p_value: float  # exact two-sided McNemar test (binomial on the discordant items)

    @property
    def difference(self) -> float:
        return (self.only_b - self.only_a) / self.total if self.total else float("nan")

    @property
    def interval(self) -> tuple[float, float]:
        """95% interval of B - A (normal approximation for paired proportions)."""
        n, discordant = self.total, self.only_a + self.only_b
        spread = 1.96 * math.sqrt(max(discordant - (self.only_b - self.only_a) ** 2 / n, 0.0)) / n if n else 0.0
        return self.difference - spread, self.difference + spread

    def __str__(self) -> str:
        low, high = self.interval
        return (
            f"{self.difference:+.3f} [{low:+.3f}, {high:+.3f}] (B-only {self.only_b}, A-only {self.only_a}, "
            f"n={self.total}, McNemar p={self.p_value:.3g})"
        )


def paired_difference(a_correct: Sequence[bool], b_correct: Sequence[bool]) -> PairedDifference:
    """Compare two runs item by item: independent intervals hide differences that pairing shows."""
    if len(a_correct) != len(b_correct):
        raise ValueError(f"{len(a_correct)} items in run A, {len(b_correct)} in run B")
    only_a = sum(a and not b for a, b in zip(a_correct, b_correct, strict=True))
    only_b = sum(b and not a for a, b in zip(a_correct, b_correct, strict=True))
    discordant = only_a + only_b
    tail = sum(math.comb(discordant, k) for k in range(min(only_a, only_b) + 1)) / 2**discordant
    return PairedDifference(only_a, only_b, len(a_correct), min(1.0, 2 * tail))
