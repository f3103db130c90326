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

Where the attention implementation takes a custom 4D mask (``sdpa``, ``eager``) and no layer slides a window, a
batch can run in one forward pass instead (layout ``packed``): a group's row holds its prefix once, followed by
every member's suffix, each suffix attending to the prefix and to itself only, with positions that continue from
the prefix as in its own prompt. No cache is copied and no suffix is padded to another's length, but the attention
kernels compute the masked-out pairs too: on a bf16 CPU with AMX it ran 1.3x slower than the default ``cached``
layout (docs/debiasing.md, "One pass per batch"), so it is opt-in.
"""

from __future__ import annotations

import copy
import inspect
from typing import Literal

import torch
from torch import Tensor

from suneung_lit.backbone import last_positions, position_ids_for_left_padding
from suneung_lit.data.batching import left_pad

PrefixLayout = Literal["cached", "packed"]
# Attention implementations that read a custom 4D mask as given: sdpa as booleans, eager as additive floats.
MASKED_ATTENTION = ("sdpa", "eager")


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


def attention_implementation(model: torch.nn.Module) -> str:
    return str(getattr(model.config, "_attn_implementation", None) or "eager")


def check_layout(model: torch.nn.Module, layout: PrefixLayout) -> None:
    """``packed`` needs a 4D mask read as given and one position per token: fail before the first batch if not."""
    if layout == "packed" and (attention_implementation(model) not in MASKED_ATTENTION or has_sliding_window(model)):
        raise ValueError(
            f"model.prefix_layout packed needs an attention implementation that takes a 4D mask {MASKED_ATTENTION} "
            f"and no sliding-window layers; this model has {attention_implementation(model)!r}"
            f"{' and sliding-window layers' if has_sliding_window(model) else ''}: use cached"
        )


def grouped_answer_logits(
    model: torch.nn.Module,
    input_ids: Tensor,
    attention_mask: Tensor,
    groups: Tensor,
    prefix_lengths: Tensor,
    layout: PrefixLayout = "cached",
) -> Tensor:
    """Answer-position logits [rows, vocab] for left-padded rows that each belong to a prefix-sharing group:
    ``groups`` holds a row's group id, ``prefix_lengths`` the real tokens its group's rows start with in common."""
    rows = [input_ids[i, attention_mask[i].bool()] for i in range(input_ids.shape[0])]
    if layout == "packed":
        check_layout(model, layout)
        return packed_answer_logits(model, rows, groups, prefix_lengths)
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


def packed_answer_logits(model: torch.nn.Module, rows: list[Tensor], groups: Tensor, prefix_lengths: Tensor) -> Tensor:
    """One forward pass for all groups: a group's row is its prefix followed by each member's suffix (right-padded
    to the longest group), under a mask that shows each suffix the prefix and itself only."""
    device = rows[0].device
    names, group_of_row = groups.unique(return_inverse=True)
    sequences, positions, segments = [], [], []
    answer_column = torch.empty(len(rows), dtype=torch.long)
    for g in range(len(names)):
        members = (group_of_row == g).nonzero().flatten().tolist()
        length = int(prefix_lengths[members[0]])
        parts, places, marks = [rows[members[0]][:length]], [torch.arange(length)], [torch.zeros(length)]
        end = length
        for segment, row in enumerate(members, start=1):
            suffix = rows[row][length:]
            parts.append(suffix)
            places.append(torch.arange(length, length + len(suffix)))
            marks.append(torch.full((len(suffix),), segment))
            end += len(suffix)
            answer_column[row] = end - 1
        sequences.append(torch.cat(parts))
        positions.append(torch.cat(places))
        segments.append(torch.cat(marks).long())
    width = max(len(s) for s in sequences)
    ids = torch.stack([_right_padded(s.to(device), width, 0) for s in sequences])
    position_ids = torch.stack([_right_padded(p.to(device), width, 0) for p in positions])
    segment = torch.stack([_right_padded(s.to(device), width, -1) for s in segments])
    embedding_dtype = model.get_input_embeddings().weight.dtype
    mask = packed_mask(segment, None if attention_implementation(model) == "sdpa" else _float_dtype(embedding_dtype))
    keep = answer_column.unique().to(device)  # sorted: the columns any group's answers sit in
    out = model(input_ids=ids, attention_mask=mask, position_ids=position_ids, use_cache=False, logits_to_keep=keep)
    column_in_kept = torch.searchsorted(keep, answer_column.to(device))
    return out.logits[group_of_row.to(device), column_in_kept]


def packed_mask(segment: Tensor, additive_dtype: torch.dtype | None = None) -> Tensor:
    """[rows, 1, length, length] attention of packed rows: ``segment`` 0 marks the shared prefix, k > 0 the k-th
    suffix, -1 padding. A token sees earlier tokens of its own segment and of the prefix; padding sees itself at
    least, so no softmax row is empty. Booleans (True: attend), or additive 0 / minimum of ``additive_dtype``."""
    length = segment.shape[1]
    causal = torch.ones(length, length, dtype=torch.bool, device=segment.device).tril()
    query, key = segment[:, :, None], segment[:, None, :]
    allowed = causal & ((key == 0) | (key == query))
    allowed |= torch.eye(length, dtype=torch.bool, device=segment.device)
    allowed = allowed[:, None]
    if additive_dtype is None:
        return allowed
    return torch.zeros(allowed.shape, dtype=additive_dtype, device=segment.device).masked_fill(
        ~allowed, torch.finfo(additive_dtype).min
    )


def _float_dtype(dtype: torch.dtype) -> torch.dtype:
    """The activations' dtype: a quantized model's embedding is a float one, but guard against integer storage."""
    return dtype if dtype.is_floating_point else torch.float32


def _right_padded(values: Tensor, width: int, fill: int) -> Tensor:
    return torch.cat([values, values.new_full((width - len(values),), fill)])
