"""Answer-position logits and option scores: the only place the model's vocabulary head is applied."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import Tensor

from suneung_lit.backbone import last_positions, position_ids_for_left_padding
from suneung_lit.data.prefixes import tokens_not_recomputed
from suneung_lit.prefix_reuse import PrefixLayout, grouped_answer_logits


def answer_logits(model: torch.nn.Module, input_ids: Tensor, attention_mask: Tensor) -> Tensor:
    """Vocabulary logits at the last position only: [batch, vocab].

    Keeping one position makes the causal-LM head project one hidden state per row instead of the whole
    sequence, so the [batch, length, vocab] tensor (151k columns for Qwen) is never built.
    """
    return last_logits(model, input_ids, attention_mask, 1)[:, -1, :]


def last_logits(model: torch.nn.Module, input_ids: Tensor, attention_mask: Tensor, keep: int) -> Tensor:
    """Vocabulary logits at the last ``keep`` positions: [batch, keep, vocab] (rationale training needs a few)."""
    output = model(
        input_ids=input_ids,
        attention_mask=attention_mask,
        position_ids=position_ids_for_left_padding(attention_mask),
        logits_to_keep=last_positions(input_ids.shape[1], keep, input_ids.device),
        use_cache=False,
    )
    return output.logits


def option_scores(logits: Tensor, option_ids: Sequence[int] | Tensor, num_choices: Tensor) -> Tensor:
    """Logits of the option tokens "1".."N" as float32, with options past each item's choice count masked out."""
    ids = torch.as_tensor(option_ids, device=logits.device)
    scores = logits.index_select(-1, ids).float()
    positions = torch.arange(scores.shape[-1], device=logits.device)
    beyond = positions.unsqueeze(0) >= num_choices.unsqueeze(1)
    return scores.masked_fill(beyond, torch.finfo(scores.dtype).min)


def batch_option_scores(
    model: torch.nn.Module, batch: Mapping[str, Any], option_ids: Sequence[int], prefix_layout: PrefixLayout = "cached"
) -> tuple[Tensor, Tensor]:
    """Answer-position logits [rows, vocab] and option scores [rows, options] of a collated batch."""
    logits = batch_answer_logits(model, batch, prefix_layout)
    return logits, option_scores(logits, option_ids, batch["num_choices"])


def batch_answer_logits(
    model: torch.nn.Module, batch: Mapping[str, Any], prefix_layout: PrefixLayout = "cached"
) -> Tensor:
    """Answer-position logits of a batch whose rows may form prefix-sharing groups (``prefix_group`` >= 0, see
    ``suneung_lit.data.prefixes``): each group computes its shared prompt prefix once, laid out as
    ``prefix_layout`` says (``suneung_lit.prefix_reuse``), the other rows run as a plain batch."""
    input_ids, mask = batch["input_ids"], batch["attention_mask"]
    groups = batch.get("prefix_group")
    if groups is None or bool((groups < 0).all()):
        return answer_logits(model, input_ids, mask)
    parts: list[tuple[Tensor, Tensor]] = []
    plain = (groups < 0).nonzero().flatten()
    if len(plain):
        parts.append((plain, answer_logits(model, *_trimmed(input_ids[plain], mask[plain]))))
    grouped = (groups >= 0).nonzero().flatten()
    if len(grouped):
        lengths = batch["prefix_length"][grouped]
        parts.append(
            (
                grouped,
                grouped_answer_logits(
                    model, input_ids[grouped], mask[grouped], groups[grouped], lengths, prefix_layout
                ),
            )
        )
    logits = parts[0][1].new_empty(len(groups), parts[0][1].shape[-1])
    for rows, part in parts:
        logits[rows] = part
    return logits


def _trimmed(input_ids: Tensor, attention_mask: Tensor) -> tuple[Tensor, Tensor]:
    """Drop the left-padding columns no row of a sub-batch needs."""
    start = int((attention_mask.sum(0) > 0).long().argmax())
    return input_ids[:, start:], attention_mask[:, start:]


def prompt_tokens(batch: Mapping[str, Any]) -> tuple[int, int]:
    """Prompt tokens a batch computes, and how many it would without prefix sharing."""
    plain = int(batch["attention_mask"].sum())
    groups = batch.get("prefix_group")
    if groups is None:
        return plain, plain
    return plain - tokens_not_recomputed(groups.tolist(), batch["prefix_length"].tolist()), plain
