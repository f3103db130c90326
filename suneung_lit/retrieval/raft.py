"""RAFT-style training data: each item's support holds its oracle passage among distractors for a fraction of the
items and distractors only for the rest, so the model learns to use a relevant passage and to ignore irrelevant ones.

The oracle is the passage named by the item's ``oracle_id`` column when it has one (a passage id of the index),
otherwise the best passage retrieved for the item (paragraph, question and choices as the query) that is not already
inside its paragraph. Distractors are drawn at random from passages that rank below the item's top candidates, so a
distractor is never a near-duplicate of the oracle. The oracle's place among the k passages is drawn at random too.
"""

from __future__ import annotations

import dataclasses
import random
from collections.abc import Sequence
from dataclasses import dataclass

from suneung_lit.data.records import Item
from suneung_lit.retrieval.index import Hit, RetrievalIndex
from suneung_lit.retrieval.support import DEFAULT_SEPARATOR, in_paragraph, retrieve_for_items, with_support

ORACLE_QUERY_FIELDS = ("paragraph", "question", "choices")
# Passages this high in an item's ranking are never its distractors.
NEAR_CANDIDATES = 20
# Random draws allowed per distractor before the index is judged too small to supply them.
DRAWS_PER_DISTRACTOR = 200


@dataclass(frozen=True)
class RaftReport:
    items: int
    with_oracle: int
    oracle_from_column: int


def _oracle_by_id(index: RetrievalIndex) -> dict[str, int]:
    return {index.passages[row].id: row for row in range(len(index))}


def _distractors(index: RetrievalIndex, item: Item, near: set[str], wanted: int, rng: random.Random) -> list[Hit]:
    """``wanted`` random passages outside ``near`` and outside the item's paragraph, all different."""
    chosen: list[Hit] = []
    taken = set(near)
    for _ in range(DRAWS_PER_DISTRACTOR * max(wanted, 1)):
        if len(chosen) == wanted:
            break
        candidate = Hit(index.passages[rng.randrange(len(index))], 0.0)
        if candidate.passage.id not in taken and not in_paragraph(candidate, item):
            chosen.append(candidate)
            taken.add(candidate.passage.id)
    if len(chosen) < wanted:
        raise ValueError(f"item {item.id!r}: found too few distractors; the index is too small or too repetitive")
    return chosen


def build_raft_items(
    items: Sequence[Item],
    index: RetrievalIndex,
    k: int = 4,
    oracle_fraction: float = 0.8,
    seed: int = 0,
    method: str = "bm25",
    separator: str = DEFAULT_SEPARATOR,
) -> tuple[list[Item], RaftReport]:
    """Every item with ``support``, ``support_ids`` and ``raft_oracle`` ("1" when the oracle is among the passages)."""
    if not 0.0 <= oracle_fraction <= 1.0:
        raise ValueError(f"oracle_fraction must be in [0, 1], got {oracle_fraction}")
    if len(index) < k + NEAR_CANDIDATES:
        raise ValueError(f"the index holds {len(index)} passages; RAFT with k={k} needs at least {k + NEAR_CANDIDATES}")
    rng = random.Random(seed)
    ranked = retrieve_for_items(items, index, NEAR_CANDIDATES, ORACLE_QUERY_FIELDS, method)
    rows_by_id = _oracle_by_id(index) if any("oracle_id" in i.metadata for i in items) else {}
    passages, flags, from_column = [], [], 0
    for item, hits in zip(items, ranked, strict=True):
        oracle_id = item.metadata.get("oracle_id", "").strip()
        if oracle_id:
            if oracle_id not in rows_by_id:
                raise ValueError(f"item {item.id!r}, column 'oracle_id': passage {oracle_id!r} is not in the index")
            oracle = Hit(index.passages[rows_by_id[oracle_id]], 0.0)
            from_column += 1
        else:
            oracle = hits[0] if hits else None
        near = {h.passage.id for h in hits} | ({oracle.passage.id} if oracle else set())
        use_oracle = oracle is not None and rng.random() < oracle_fraction
        chosen = _distractors(index, item, near, k - 1 if use_oracle else k, rng)
        if use_oracle:
            chosen.insert(rng.randrange(k), oracle)
        passages.append(chosen)
        flags.append("1" if use_oracle else "0")
    out = [
        dataclasses.replace(supported, metadata={**supported.metadata, "raft_oracle": flag})
        for supported, flag in zip(with_support(items, passages, separator), flags, strict=True)
    ]
    return out, RaftReport(len(items), flags.count("1"), from_column)
