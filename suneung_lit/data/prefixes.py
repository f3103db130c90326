"""Which prompt rows share a token prefix: the groups whose common prefix the model computes once.

Rows are grouped by a key that makes sharing likely (the paragraph, or the item whose shifted copies they are);
the shared length is then measured on the tokens. The model side (``suneung_lit.prefix_reuse``) runs each
group's prefix once and its suffixes from the key/value cache.
"""

from __future__ import annotations

from collections.abc import Hashable, Sequence

# Shorter shared prefixes are not worth a separate forward pass.
MIN_SHARED_TOKENS = 64


def common_prefix_length(sequences: Sequence[Sequence[int]]) -> int:
    """Length of the longest token prefix all sequences share (each keeps at least one token of its own)."""
    shortest = min(len(s) for s in sequences)
    length = 0
    while length < shortest - 1 and all(s[length] == sequences[0][length] for s in sequences):
        length += 1
    return length


def prefix_groups(
    input_ids: Sequence[Sequence[int]], keys: Sequence[Hashable], min_shared: int = MIN_SHARED_TOKENS
) -> tuple[list[int], list[int]]:
    """Per row: a group id (-1 when alone) and the shared prefix length, for rows whose ``keys`` match.

    A group is only formed when its prompts really start with the same ``min_shared`` or more tokens.
    """
    rows_of: dict[Hashable, list[int]] = {}
    for row, key in enumerate(keys):
        rows_of.setdefault(key, []).append(row)
    group = [-1] * len(keys)
    shared = [0] * len(keys)
    next_id = 0
    for rows in rows_of.values():
        if len(rows) < 2:
            continue
        length = common_prefix_length([input_ids[r] for r in rows])
        if length < min_shared:
            continue
        for row in rows:
            group[row], shared[row] = next_id, length
        next_id += 1
    return group, shared


def tokens_not_recomputed(group: Sequence[int], shared: Sequence[int]) -> int:
    """Prompt tokens prefix reuse saves: each group's shared prefix runs once instead of once per row."""
    rows = {g: 0 for g in group if g >= 0}
    length = {}
    for g, n in zip(group, shared, strict=True):
        if g >= 0:
            rows[g] += 1
            length[g] = n
    return sum((rows[g] - 1) * length[g] for g in rows)
