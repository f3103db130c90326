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
