"""The optimizer and learning-rate schedule of a fine-tune."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Literal

import torch

OptimizerChoice = Literal["adamw", "adamw_8bit", "paged_adamw_8bit", "paged_adamw_32bit"]


def build_optimizer(
    params: Iterable[torch.nn.Parameter], name: OptimizerChoice, learning_rate: float, weight_decay: float
) -> torch.optim.Optimizer:
    """torch's AdamW, or one of bitsandbytes' 8-bit/paged AdamW variants (optimizer state in less memory)."""
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
