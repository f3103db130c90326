"""Torchmetrics the module logs beyond plain accuracy: per data source, and exam points (``suneung_lit.exam``)."""

from __future__ import annotations

import torch
from torchmetrics import Metric

from suneung_lit.exam import ExamPoints, points_line


class GroupedAccuracy(Metric):
    """Accuracy per data source (a ``source``/``category`` column), synced across devices.

    ``compute`` returns ``{source name: accuracy}``, one entry per name whatever their count: a bare tensor would
    not do, because torchmetrics squeezes a one-element result to a 0-d tensor (a file with a single source).
    """

    def __init__(self, names: list[str]):
        super().__init__()
        self.names = list(names)
        self.add_state("correct", torch.zeros(len(self.names)), dist_reduce_fx="sum")
        self.add_state("total", torch.zeros(len(self.names)), dist_reduce_fx="sum")

    def update(self, preds: torch.Tensor, target: torch.Tensor, groups: torch.Tensor) -> None:
        known = groups >= 0
        groups, hits = groups[known], (preds[known] == target[known]).float()
        self.correct.index_add_(0, groups, hits)
        self.total.index_add_(0, groups, torch.ones_like(hits))

    def compute(self) -> dict[str, torch.Tensor]:
        accuracy = self.correct / self.total.clamp(min=1)
        return {name: accuracy[i] for i, name in enumerate(self.names)}


class SourceReport(torch.nn.Module):
    """What validation or test reports per data source: accuracy, and exam points where items carry a score."""

    def __init__(self, names: list[str], max_choices: int, scored: bool):
        super().__init__()
        self.accuracy = GroupedAccuracy(names)
        self.points = ExamPoints(names, max_choices) if scored else None

    def update(self, preds: torch.Tensor, target: torch.Tensor, groups: torch.Tensor, scores: torch.Tensor) -> None:
        self.accuracy.update(preds, target, groups)
        if self.points is not None:
            self.points.update(preds, target, groups, scores)

    def report(self, prefix: str, stage: str) -> tuple[dict[str, torch.Tensor], list[str]]:
        """Metrics to log (``{prefix}/acc/<source>``, ``{prefix}/points/<source>`` and the constant's and full
        marks beside them) and the points lines to print; resets for the next epoch."""
        metrics = {f"{prefix}/acc/{name}": value for name, value in self.accuracy.compute().items()}
        lines = []
        for name, result in (self.points.compute() if self.points is not None else {}).items():
            metrics[f"{prefix}/points/{name}"] = result["points"]
            metrics[f"{prefix}/points_constant/{name}"] = result["constant"]
            metrics[f"{prefix}/points_total/{name}"] = result["total"]
            lines.append(points_line(stage, name, result))
        self.accuracy.reset()
        if self.points is not None:
            self.points.reset()
        return metrics, lines
