"""Shared-passage prefix reuse: items that share a paragraph run the common prompt prefix once.

In the competition test set 869 items share 725 paragraphs. For a group of items whose prompts start with the
same tokens, the prefix goes through the model once (with the key/value cache); each item then runs only its own
suffix (question, <보기>, choices) on a copy of that cache. The answer logits equal the plain path's up to float
rounding: the suffix attends to exactly the prefix tokens it would have attended to.

A batch holds several groups (an item's shifted copies form one). Most models run the prefixes of all of them as
one left-padded pass and then every suffix as a second one, each row reading its own group's cache rows: two
forward passes a batch, whatever the number of groups (on a CPU, a pass per group cost a quarter more than its
tokens). Models with sliding-window attention layers (Gemma 3) keep a window of the cache by index, so padding
before or between prefix and suffix would shift the window: their groups run one at a time, each prefix alone and
each suffix unpadded.
"""

from __future__ import annotations

import copy
import inspect

import torch
from torch import Tensor

from suneung_lit.backbone import last_positions, position_ids_for_left_padding
from suneung_lit.data.batching import left_pad


def has_sliding_window(model: torch.nn.Module) -> bool:
    config = model.config
    layer_types = getattr(config, "layer_types", None) or []
    return "sliding_attention" in layer_types or bool(getattr(config, "use_sliding_window", False))


def _cache_keyword(model: torch.nn.Module) -> str:
    """The forward argument that takes a key/value cache: transformers 5.x renamed ``past_key_values`` to
    ``cache`` (the old name is deprecated and goes in 5.40); earlier 5.x releases know only the old one."""
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    return "cache" if "cache" in inspect.signature(base.forward).parameters else "past_key_values"


def _returned_cache(out):
    cache = getattr(out, "cache", None)
    return cache if cache is not None else out.past_key_values


def grouped_answer_logits(
    model: torch.nn.Module, input_ids: Tensor, attention_mask: Tensor, groups: Tensor, prefix_lengths: Tensor
) -> Tensor:
    """Answer-position logits [rows, vocab] for left-padded rows that each belong to a prefix-sharing group:
    ``groups`` holds a row's group id, ``prefix_lengths`` the real tokens its group's rows start with in common."""
    rows = [input_ids[i, attention_mask[i].bool()] for i in range(input_ids.shape[0])]
    if has_sliding_window(model):
        return _one_group_at_a_time(model, rows, groups, prefix_lengths)
    names, group_of_row = groups.unique(return_inverse=True)
    first_row = [int((group_of_row == g).nonzero()[0]) for g in range(len(names))]
    prefixes = [rows[r][: int(prefix_lengths[r])] for r in first_row]
    # The pad id is never attended to; 0 exists in every vocabulary.
    prefix_ids, prefix_mask = left_pad(prefixes, 0, input_ids.device)
    out = model(
        input_ids=prefix_ids,
        attention_mask=prefix_mask,
        position_ids=position_ids_for_left_padding(prefix_mask),
        use_cache=True,
        logits_to_keep=last_positions(prefix_ids.shape[1], 1, prefix_ids.device),
    )
    cache = _returned_cache(out)
    cache.batch_select_indices(group_of_row)
    suffixes = [row[int(length) :] for row, length in zip(rows, prefix_lengths, strict=True)]
    ids, mask = left_pad(suffixes, 0, input_ids.device)
    return _suffix_logits(model, cache, ids, mask, prefix_lengths.to(ids.device), prefix_mask[group_of_row])


def _one_group_at_a_time(model: torch.nn.Module, rows: list[Tensor], groups: Tensor, prefix_lengths: Tensor) -> Tensor:
    """Each group's prefix alone, then each of its suffixes alone and unpadded, from a copy of the cache."""
    logits: list[Tensor] = [torch.empty(0)] * len(rows)
    for group in groups.unique().tolist():
        members = (groups == group).nonzero().flatten().tolist()
        length = int(prefix_lengths[members[0]])
        prefix = rows[members[0]][:length][None]
        keep = last_positions(length, 1, prefix.device)
        out = model(input_ids=prefix, attention_mask=torch.ones_like(prefix), use_cache=True, logits_to_keep=keep)
        cache = _returned_cache(out)
        lengths, prefix_mask = torch.tensor([length], device=prefix.device), torch.ones_like(prefix)
        for row in members:
            suffix = rows[row][length:][None]
            logits[row] = _suffix_logits(
                model, copy.deepcopy(cache), suffix, torch.ones_like(suffix), lengths, prefix_mask
            )
    return torch.cat(logits)


def _suffix_logits(model, cache, ids: Tensor, mask: Tensor, prefix_lengths: Tensor, prefix_mask: Tensor) -> Tensor:
    """The left-padded suffix rows' answer logits from ``cache``, whose rows hold each suffix's prefix
    (``prefix_lengths`` real tokens, marked in the left-padded ``prefix_mask``)."""
    full_mask = torch.cat([prefix_mask, mask], dim=1)
    # Positions continue from the prefix on each row's first real token, as in the unsplit prompt.
    positions = prefix_lengths[:, None] + position_ids_for_left_padding(mask)
    out = model(
        input_ids=ids,
        attention_mask=full_mask,
        position_ids=positions,
        use_cache=True,
        logits_to_keep=last_positions(ids.shape[1], 1, ids.device),
        **{_cache_keyword(model): cache},
    )
    return out.logits[:, -1, :]
