"""Torchmetrics the module logs beyond plain accuracy."""

from __future__ import annotations

import torch
from torchmetrics import Metric


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
