"""Cheap training-data augmentation: permuted choices with remapped answers, and answer-position balancing."""

from __future__ import annotations

import itertools
import random
from collections.abc import Sequence
from dataclasses import replace

from suneung_lit.data.records import Item
from suneung_lit.data.splitting import paragraph_key


def _permuted(item: Item, order: Sequence[int], suffix: str) -> Item:
    """The item with its choices in ``order`` (0-based indices into the original), answer following its text."""
    choices = tuple(item.choices[i] for i in order)
    answer = list(order).index(item.answer - 1) + 1 if item.answer is not None else None
    metadata = {**item.metadata, "group": paragraph_key(item), "augmented_from": item.id}
    return replace(item, id=f"{item.id}{suffix}", choices=choices, answer=answer, metadata=metadata)


def shuffle_choices(items: Sequence[Item], copies: int, seed: int = 0) -> list[Item]:
    """Each item followed by up to ``copies`` copies with distinct non-identity choice orders.

    Copies share their original's split group, so a grouped split never separates them.
    """
    rng = random.Random(seed)
    result = []
    for item in items:
        result.append(replace(item, metadata={**item.metadata, "group": paragraph_key(item)}))
        identity = tuple(range(item.num_choices))
        orders = [p for p in itertools.permutations(identity) if p != identity]
        for number, order in enumerate(rng.sample(orders, min(copies, len(orders))), start=1):
            result.append(_permuted(item, order, f"-shuf{number}"))
    return result


def balance_answers(items: Sequence[Item], seed: int = 0) -> list[Item]:
    """Move each answer to a position drawn so that every position is equally common (per choice count).

    The correct choice moves to its target slot; the others keep their relative order. Ids and groups stay.
    """
    rng = random.Random(seed)
    by_count: dict[int, list[int]] = {}
    for index, item in enumerate(items):
        by_count.setdefault(item.num_choices, []).append(index)
    targets: dict[int, int] = {}
    for count, indices in by_count.items():
        slots = [i % count for i in range(len(indices))]
        rng.shuffle(slots)
        targets.update(zip(indices, slots, strict=True))
    result = []
    for index, item in enumerate(items):
        if item.answer is None:
            result.append(item)
            continue
        others = [i for i in range(item.num_choices) if i != item.answer - 1]
        order = others[: targets[index]] + [item.answer - 1] + others[targets[index] :]
        moved = _permuted(item, order, "")
        result.append(replace(moved, metadata={**item.metadata}))
    return result


def balanced_shift_rows(
    item_index: Sequence[int], answer: Sequence[int], num_choices: Sequence[int], seed: int
) -> list[int]:
    """One row per item, picking among its cyclic-shift rows so that answer positions are uniform.

    Rows hold every cyclic shift of every training item (``answer`` is the row's 0-based answer position). Per
    choice count, target positions are dealt round-robin and shuffled with ``seed``, so each position is the
    answer equally often (within one) whatever the labels' own skew. A new seed per epoch gives each item a
    new position. Returns row indices in item order.
    """
    rows_of: dict[int, dict[int, int]] = {}
    count_of: dict[int, int] = {}
    for row, (item, position, n) in enumerate(zip(item_index, answer, num_choices, strict=True)):
        rows_of.setdefault(item, {})[position] = row
        count_of[item] = n
    rng = random.Random(seed)
    by_count: dict[int, list[int]] = {}
    for item in sorted(rows_of):
        by_count.setdefault(count_of[item], []).append(item)
    target: dict[int, int] = {}
    for n, items in sorted(by_count.items()):
        slots = [i % n for i in range(len(items))]
        rng.shuffle(slots)
        target.update(zip(items, slots, strict=True))
    chosen = []
    for item in sorted(rows_of):
        if target[item] not in rows_of[item]:
            raise ValueError(f"item {item} has no row with its answer at position {target[item] + 1}")
        chosen.append(rows_of[item][target[item]])
    return chosen
