"""Exam points: items that carry a ``score`` (KICE 수능 국어 papers: 45 items worth 2 or 3 points, 100 in all) are
reported in points per exam (the data source), beside what the best constant predictor would earn on the same items.

Users of Korean LLMs read exam results this way (GPT-4 scored 68 points on average over the 2015-2024 papers); an
accuracy hides that a 3-point item counts half again as much as a 2-point one.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor
from torchmetrics import Metric

from suneung_lit.data.records import Item, Problem


def item_score(item: Item) -> float | None:
    """The item's ``score`` as a number, None where it has none; ``ValueError`` when it is not a positive number."""
    text = str(item.metadata.get("score", "")).strip()
    if not text:
        return None
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not math.isfinite(value) or value <= 0:
        raise ValueError(f"score {text!r} is not a positive number")
    return value


def score_or_zero(item: Item | None) -> float:
    """The item's points, 0 where it has none or they cannot be read (the data module names those before encoding)."""
    try:
        return (item_score(item) or 0.0) if item is not None else 0.0
    except ValueError:
        return 0.0


def score_problems(items: list[Item], path: str) -> list[Problem]:
    """Each item whose ``score`` cannot be read as points, named by file, id and column."""
    problems = []
    for item in items:
        try:
            item_score(item)
        except ValueError:
            message = f"score {item.metadata.get('score')!r} is not a positive number of points"
            problems.append(Problem(path, None, item.id, "score", message))
    return problems


class ExamPoints(Metric):
    """Points earned per source over its items that carry a score, the points at stake, and the points of the best
    constant predictor (always the same position, the one that earns most on these items); synced across devices."""

    def __init__(self, names: list[str], max_choices: int):
        super().__init__()
        self.names = list(names)
        self.add_state("earned", torch.zeros(len(self.names)), dist_reduce_fx="sum")
        self.add_state("total", torch.zeros(len(self.names)), dist_reduce_fx="sum")
        # Points each position would earn if always answered: the keyed answer's score lands on its position.
        self.add_state("by_position", torch.zeros(len(self.names), max_choices), dist_reduce_fx="sum")

    def update(self, preds: Tensor, target: Tensor, groups: Tensor, scores: Tensor) -> None:
        kept = (groups >= 0) & (scores > 0) & (target >= 0)
        groups, preds, target, scores = groups[kept], preds[kept], target[kept], scores[kept].float()
        self.earned.index_add_(0, groups, scores * (preds == target).float())
        self.total.index_add_(0, groups, scores)
        self.by_position.index_put_((groups, target), scores, accumulate=True)

    def compute(self) -> dict[str, dict[str, Tensor]]:
        """``{source: {"points", "total", "constant", "constant_position"}}`` for the sources with scored items."""
        best, position = self.by_position.max(-1)
        return {
            name: {
                "points": self.earned[i],
                "total": self.total[i],
                "constant": best[i],
                "constant_position": position[i],
            }
            for i, name in enumerate(self.names)
            if self.total[i] > 0
        }


def points_line(stage: str, source: str, result: dict[str, Tensor]) -> str:
    """E.g. ``validation exam points, kice/2023_11_KICE: 62 / 100 (best constant predictor, always 3: 24; full
    marks 100)``."""
    total = _points(result["total"])
    return (
        f"{stage} exam points, {source}: {_points(result['points'])} / {total} (best constant predictor, always "
        f"{int(result['constant_position']) + 1}: {_points(result['constant'])}; full marks {total})"
    )


def _points(value: Tensor) -> str:
    number = float(value)
    return f"{number:.0f}" if number.is_integer() else f"{number:.1f}"
