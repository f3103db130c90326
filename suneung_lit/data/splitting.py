"""Validation split that keeps every paragraph on one side, balanced by answer position."""

from __future__ import annotations

import random
import re
from collections import Counter, defaultdict
from collections.abc import Sequence

from suneung_lit.data.records import Item

_NON_WORD = re.compile(r"\W+")


def paragraph_key(item: Item) -> str:
    """Items whose paragraphs match after dropping spacing and punctuation share a group.

    A ``group`` metadata value (set on augmented copies) overrides it, so copies stay with their original.
    """
    if item.metadata.get("group"):
        return item.metadata["group"]
    return _NON_WORD.sub("", item.paragraph).lower() or f"\x00{item.id}"


def grouped_split(items: Sequence[Item], val_fraction: float = 0.1, seed: int = 42) -> tuple[list[Item], list[Item]]:
    """Split into (train, val) with no paragraph on both sides, stratified by answer where possible.

    Groups are visited in a seeded random order; a group goes to validation when that brings validation's
    answer histogram closer to ``val_fraction`` of the overall one without overshooting the size target.
    Both lists keep the input order.
    """
    if not 0.0 < val_fraction < 1.0:
        raise ValueError(f"val_fraction must be between 0 and 1, got {val_fraction}")
    groups: dict[str, list[Item]] = defaultdict(list)
    for item in items:
        groups[paragraph_key(item)].append(item)
    keys = sorted(groups)
    random.Random(seed).shuffle(keys)

    total = Counter(item.answer for item in items)
    target = {answer: count * val_fraction for answer, count in total.items()}
    target_size = round(len(items) * val_fraction)
    val_counts: Counter = Counter()
    val_size = 0
    val_keys: set[str] = set()
    for key in keys:
        group = groups[key]
        if val_size + len(group) > target_size:
            continue
        group_counts = Counter(item.answer for item in group)
        # Take the group only if no answer class would exceed its share by more than half a group.
        if all(val_counts[a] + n <= target[a] + max(1.0, len(group) / 2) for a, n in group_counts.items()):
            val_keys.add(key)
            val_counts.update(group_counts)
            val_size += len(group)
        if val_size >= target_size:
            break
    if not val_keys and items:
        raise ValueError(
            f"cannot carve a validation split of {val_fraction:.0%} from {len(items)} items "
            f"in {len(groups)} paragraph group(s); lower val_fraction or pass val_path"
        )
    train = [item for item in items if paragraph_key(item) not in val_keys]
    val = [item for item in items if paragraph_key(item) in val_keys]
    return train, val
