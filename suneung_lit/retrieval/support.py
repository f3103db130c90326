"""Support passages for items: the query each item sends, and the ``support`` column the ``support`` template reads."""

from __future__ import annotations

import dataclasses
import json
import re
from collections.abc import Sequence

from suneung_lit.data.records import Item
from suneung_lit.retrieval.index import Hit, RetrievalIndex

QUERY_FIELDS = ("paragraph", "question", "question_plus", "choices")
DEFAULT_QUERY_FIELDS = ("question", "choices")
DEFAULT_SEPARATOR = "\n\n"
# Extra candidates fetched per item so that k remain after passages already in the item's paragraph are left out.
EXCLUSION_MARGIN = 5
_SPACE = re.compile(r"\s+")


def build_query(item: Item, fields: Sequence[str] = DEFAULT_QUERY_FIELDS) -> str:
    """The item's text that is sent to the retriever: the chosen fields, in the order given, one per line."""
    unknown = [f for f in fields if f not in QUERY_FIELDS]
    if unknown or not fields:
        raise ValueError(f"query fields must be among {', '.join(QUERY_FIELDS)}, got {list(fields)}")
    parts = []
    for name in fields:
        parts.append("\n".join(item.choices) if name == "choices" else getattr(item, name))
    return "\n".join(p for p in parts if p.strip())


def _normalised(text: str) -> str:
    return _SPACE.sub(" ", text).strip()


def in_paragraph(hit: Hit, item: Item) -> bool:
    """Whether the passage repeats text the prompt already shows (e.g. the index was built from the same set)."""
    return _normalised(hit.passage.text) in _normalised(item.paragraph)


def format_support(hits: Sequence[Hit], separator: str = DEFAULT_SEPARATOR) -> str:
    return separator.join(f"{h.passage.title}: {h.passage.text}" if h.passage.title else h.passage.text for h in hits)


def retrieve_for_items(
    items: Sequence[Item],
    index: RetrievalIndex,
    k: int,
    fields: Sequence[str] = DEFAULT_QUERY_FIELDS,
    method: str = "bm25",
    exclude_paragraph: bool = True,
) -> list[list[Hit]]:
    """The ``k`` best passages per item; with ``exclude_paragraph``, passages already inside its paragraph skipped."""
    queries = [build_query(item, fields) for item in items]
    depth = k + EXCLUSION_MARGIN if exclude_paragraph else k
    results = index.search(queries, depth, method)
    if exclude_paragraph:
        results = [[h for h in hits if not in_paragraph(h, item)] for hits, item in zip(results, items, strict=True)]
    return [hits[:k] for hits in results]


def with_support(
    items: Sequence[Item], hits: Sequence[Sequence[Hit]], separator: str = DEFAULT_SEPARATOR
) -> list[Item]:
    """Items with ``support`` (the passages' text) and ``support_ids`` (their ids, JSON) metadata columns."""
    out = []
    for item, item_hits in zip(items, hits, strict=True):
        metadata = {
            **item.metadata,
            "support": format_support(item_hits, separator),
            "support_ids": json.dumps([h.passage.id for h in item_hits], ensure_ascii=False),
        }
        out.append(dataclasses.replace(item, metadata=metadata))
    return out
