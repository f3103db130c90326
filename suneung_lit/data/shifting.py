"""Cyclic shifts of an item's choices: the copies that balanced training and debiased evaluation score.

An item with ``n`` choices has ``n`` cyclic shifts; shift ``s`` moves choice ``j`` to position ``(j + s) % n``
and the answer follows its text. Debiased evaluation (``suneung_lit.debias``) turns the copies' scores back into
one row per item; this module only decides which copies exist.
"""

from __future__ import annotations

import math
import random
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Literal

from suneung_lit.data.records import Item

DebiasChoice = Literal["none", "cyclic", "pride", "offsets"]
SHIFT_SEPARATOR = "@shift"


def cyclic_shift(item: Item, shift: int) -> Item:
    """The item with choice ``j`` moved to position ``(j + shift) % n``; the answer follows its text."""
    n = item.num_choices
    choices = tuple(item.choices[(position - shift) % n] for position in range(n))
    answer = (item.answer - 1 + shift) % n + 1 if item.answer is not None else None
    return replace(item, id=f"{item.id}{SHIFT_SEPARATOR}{shift}", choices=choices, answer=answer)


def split_shifted_id(shifted_id: str) -> tuple[str, int]:
    original, _, shift = shifted_id.rpartition(SHIFT_SEPARATOR)
    return original, int(shift)


@dataclass(frozen=True)
class ScoredCopy:
    """One row to score: an item (possibly with shifted choices), the original's index and the shift."""

    item: Item
    item_index: int
    shift: int
    calibration: bool  # one of PriDe's calibration items


def calibration_items(items: Sequence[Item], fraction: float, seed: int) -> set[int]:
    """A seeded ``fraction`` of the items of each choice count (at least one per count), by index."""
    by_count: dict[int, list[int]] = {}
    for index, item in enumerate(items):
        by_count.setdefault(item.num_choices, []).append(index)
    rng = random.Random(seed)
    chosen: set[int] = set()
    for indices in by_count.values():
        chosen.update(rng.sample(indices, max(1, math.ceil(fraction * len(indices)))))
    return chosen


def scored_copies(items: Sequence[Item], debias: DebiasChoice, fraction: float, seed: int) -> list[ScoredCopy]:
    """The rows an evaluation scores: each item once, or under all cyclic shifts (every item, or PriDe's few).

    Shifted copies keep the original id (predictions are per item); the shift is a separate column.
    """
    everywhere = debias == "cyclic"
    calibration = calibration_items(items, fraction, seed) if debias == "pride" else set()
    copies = []
    for index, item in enumerate(items):
        for shift in range(item.num_choices if everywhere or index in calibration else 1):
            shifted = replace(cyclic_shift(item, shift), id=item.id) if shift else item
            copies.append(ScoredCopy(shifted, index, shift, index in calibration))
    return copies
