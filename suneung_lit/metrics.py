"""Torchmetrics the module logs beyond plain accuracy."""

from __future__ import annotations

import torch
from torchmetrics import Metric


class GroupedAccuracy(Metric):
    """Accuracy per data source (a ``source``/``category`` column), synced across devices."""

    def __init__(self, num_groups: int):
        super().__init__()
        self.add_state("correct", torch.zeros(num_groups), dist_reduce_fx="sum")
        self.add_state("total", torch.zeros(num_groups), dist_reduce_fx="sum")

    def update(self, preds: torch.Tensor, target: torch.Tensor, groups: torch.Tensor) -> None:
        known = groups >= 0
        groups, hits = groups[known], (preds[known] == target[known]).float()
        self.correct.index_add_(0, groups, hits)
        self.total.index_add_(0, groups, torch.ones_like(hits))

    def compute(self) -> torch.Tensor:
        return self.correct / self.total.clamp(min=1)
