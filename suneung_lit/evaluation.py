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
from suneung_lit.debias import cyclic_shift


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
