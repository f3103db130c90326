"""The optimizer and learning-rate schedule of a fine-tune."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Literal

import torch

OptimizerChoice = Literal["adamw", "adamw_8bit", "paged_adamw_8bit", "paged_adamw_32bit"]


@dataclass(frozen=True)
class OptimizationSettings:
    """How the adapters are optimized (``model.optimization`` in a config).

    Args:
        optimizer: ``adamw`` or a bitsandbytes 8-bit/paged AdamW.
        learning_rate: peak learning rate.
        weight_decay: AdamW weight decay.
        warmup_ratio: share of the optimizer steps spent warming up linearly.
        scheduler_total_steps: steps of the cosine schedule; default: the trainer's estimated stepping batches.
    """

    optimizer: OptimizerChoice = "adamw"
    learning_rate: float = 2e-4
    weight_decay: float = 0.0
    warmup_ratio: float = 0.1
    scheduler_total_steps: int | None = None


def build_optimizer(params: Iterable[torch.nn.Parameter], settings: OptimizationSettings) -> torch.optim.Optimizer:
    """torch's AdamW, or one of bitsandbytes' 8-bit/paged AdamW variants (optimizer state in less memory)."""
    name, learning_rate, weight_decay = settings.optimizer, settings.learning_rate, settings.weight_decay
    if name == "adamw":
        return torch.optim.AdamW(params, lr=learning_rate, weight_decay=weight_decay)
    import bitsandbytes as bnb

    cls = {
        "adamw_8bit": bnb.optim.AdamW8bit,
        "paged_adamw_8bit": bnb.optim.PagedAdamW8bit,
        "paged_adamw_32bit": bnb.optim.PagedAdamW32bit,
    }[name]
    return cls(params, lr=learning_rate, weight_decay=weight_decay)


def warmup_cosine(optimizer: torch.optim.Optimizer, warmup_ratio: float, total_steps: int):
    """Linear warm-up over ``warmup_ratio`` of the steps, then cosine decay to zero, stepped every optimizer step."""
    from transformers import get_cosine_schedule_with_warmup

    return get_cosine_schedule_with_warmup(optimizer, int(warmup_ratio * total_steps), total_steps)
