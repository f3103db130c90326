"""Shared-passage prefix reuse: items that share a paragraph run the common prompt prefix once.

In the competition test set 869 items share 725 paragraphs. For a group of items whose prompts start with the
same tokens, the prefix goes through the model once (batch 1, with the key/value cache); each item then runs only
its own suffix (question, <보기>, choices) on a copy of that cache. The answer logits equal the plain path's up to
float rounding: the suffix attends to exactly the prefix tokens it would have attended to.

Models with sliding-window attention layers (Gemma 3) keep a window of the cache by index, so padding between
prefix and suffix would shift the window; their suffixes run one at a time, unpadded. Other models run the
suffixes of a group as one left-padded batch.
"""

from __future__ import annotations

import copy
import inspect

import torch
from torch import Tensor

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


def shared_prefix_answer_logits(
    model: torch.nn.Module, input_ids: Tensor, attention_mask: Tensor, prefix_length: int
) -> Tensor:
    """Answer-position logits [rows, vocab] for left-padded rows that all start with the same ``prefix_length``
    real tokens, computing that prefix once."""
    rows = [input_ids[i, attention_mask[i].bool()] for i in range(input_ids.shape[0])]
    prefix = rows[0][:prefix_length][None]
    suffixes = [row[prefix_length:] for row in rows]
    out = model(input_ids=prefix, attention_mask=torch.ones_like(prefix), use_cache=True, logits_to_keep=1)
    cache = _returned_cache(out)
    if has_sliding_window(model):
        logits = []
        for suffix in suffixes:
            logits.append(_suffix_logits(model, copy.deepcopy(cache), suffix[None], prefix_length))
        return torch.cat(logits)
    cache.batch_repeat_interleave(len(suffixes))
    # The pad id is never attended to; 0 exists in every vocabulary.
    ids, mask = left_pad(suffixes, 0, input_ids.device)
    return _suffix_logits(model, cache, ids, prefix_length, mask)


def _suffix_logits(model, cache, ids: Tensor, prefix_length: int, mask: Tensor | None = None) -> Tensor:
    mask = torch.ones_like(ids) if mask is None else mask
    full_mask = torch.cat([mask.new_ones(ids.shape[0], prefix_length), mask], dim=1)
    # Positions continue from the prefix on each row's first real token, as in the unsplit prompt.
    positions = prefix_length + (mask.cumsum(-1) - 1).clamp(min=0)
    out = model(
        input_ids=ids,
        attention_mask=full_mask,
        position_ids=positions,
        use_cache=True,
        logits_to_keep=1,
        **{_cache_keyword(model): cache},
    )
    return out.logits[:, -1, :]
