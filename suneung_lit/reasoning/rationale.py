"""Rationale training: the loss covers the assistant turn (reasoning, then the answer digit), nothing else.

Items with a ``reasoning`` column end their prompt with the assistant turn written out up to the digit
(``{"reasoning": "...", "answer": `` in the ``cot_reasoning`` template), and ``reasoning_length`` counts those
tokens. The vocabulary head is applied to the last ``max(reasoning_length) + 1`` positions only.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from suneung_lit.scoring import last_logits, option_scores


def rationale_token_loss(window_logits: Tensor, input_ids: Tensor, reasoning_length: Tensor) -> tuple[Tensor, int]:
    """Summed cross-entropy of each row's last ``reasoning_length`` tokens, and how many tokens that is.

    ``window_logits`` are the logits at the last ``K`` positions ([batch, K, vocab], K > max length); position
    ``t`` predicts token ``t + 1``, so the first ``K - 1`` of them predict the last ``K - 1`` tokens.
    """
    keep = window_logits.shape[1]
    targets = input_ids[:, -(keep - 1) :]
    offsets = torch.arange(keep - 1, device=input_ids.device)
    counted = offsets.unsqueeze(0) >= (keep - 1 - reasoning_length).unsqueeze(1)
    losses = F.cross_entropy(
        window_logits[:, :-1].float().reshape(-1, window_logits.shape[-1]), targets.reshape(-1), reduction="none"
    )
    return (losses * counted.reshape(-1)).sum(), int(counted.sum())


def rationale_loss(
    model: torch.nn.Module,
    batch: dict[str, Any],
    option_ids: Sequence[int],
    answer_loss: Callable[[Tensor, Tensor], Tensor],
) -> tuple[Tensor, Tensor, Tensor]:
    """Mean loss over the assistant turn (reasoning tokens, and the digit under ``answer_loss(logits, scores)``),
    with the answer-position logits and option scores."""
    keep = int(batch["reasoning_length"].max()) + 1
    window = last_logits(model, batch["input_ids"], batch["attention_mask"], keep)
    logits = window[:, -1, :]
    scores = option_scores(logits, option_ids, batch["num_choices"])
    reasoning_sum, tokens = rationale_token_loss(window, batch["input_ids"], batch["reasoning_length"])
    rows = len(batch["id"])
    return (answer_loss(logits, scores) * rows + reasoning_sum) / (rows + tokens), logits, scores
