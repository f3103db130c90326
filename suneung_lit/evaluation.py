"""Honest accuracy: intervals, the best constant predictor, and answer-balanced copies of held-out items.

Competition answers are skewed (46.7% of train answers are "1"), so a model that learns only the answer prior
looks good on a random split. Each accuracy here stands beside the best constant predictor on the same items,
and items can be scored under every cyclic shift of their choices, so that each position is right equally often.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, replace

import torch

from suneung_lit.data.records import Item

SHIFT_SEPARATOR = "@shift"


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


def cyclic_shift(item: Item, shift: int) -> Item:
    """The item with choice ``j`` moved to position ``(j + shift) % n``; the answer follows its text."""
    n = item.num_choices
    choices = tuple(item.choices[(position - shift) % n] for position in range(n))
    answer = (item.answer - 1 + shift) % n + 1 if item.answer is not None else None
    return replace(item, id=f"{item.id}{SHIFT_SEPARATOR}{shift}", choices=choices, answer=answer)


def balanced_copies(items: Sequence[Item]) -> list[Item]:
    """Every item under all ``n`` cyclic shifts of its choices: each position is the answer equally often."""
    return [cyclic_shift(item, shift) for item in items for shift in range(item.num_choices)]


def split_shifted_id(shifted_id: str) -> tuple[str, int]:
    original, _, shift = shifted_id.rpartition(SHIFT_SEPARATOR)
    return original, int(shift)


def unshift(log_probs: torch.Tensor, shift: int, num_choices: int) -> torch.Tensor:
    """Map a shifted copy's option log-probabilities back to the original choice order."""
    order = (torch.arange(num_choices) + shift) % num_choices
    return log_probs[:num_choices][order]


def cyclic_average(copies: dict[int, torch.Tensor], num_choices: int) -> torch.Tensor:
    """Mean log-probability of each original choice over all its shifted copies: position bias cancels out."""
    if sorted(copies) != list(range(num_choices)):
        raise ValueError(f"need all {num_choices} shifts, got {sorted(copies)}")
    return torch.stack([unshift(lp, shift, num_choices) for shift, lp in copies.items()]).mean(0)
