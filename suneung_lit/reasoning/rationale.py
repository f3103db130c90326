"""Rationale training: the loss covers the assistant turn (reasoning, then the answer digit), nothing else.

Items with a ``reasoning`` column end their prompt with the assistant turn written out up to the digit
(``{"reasoning": "...", "answer": `` in the ``cot_reasoning`` template), and ``reasoning_length`` counts those
tokens. The vocabulary head is applied to the last ``max(reasoning_length) + 1`` positions only.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor


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
