"""Few-shot examples: K solved items from a pool (the training file by default) put before each item's own turn.

The 2024 team nlp-10 found two examples in the prompt of an untuned Qwen2.5-32B beat their fine-tune on the private
board, and the 2025 runner-up put three retrieved train items in every prompt. Rules that keep a reading honest:

- never the item itself, never an item of its paragraph group (``splitting.paragraph_key``): the example must not
  give the answer away;
- never a validation, test or predict item (the caller leaves them out of the pool);
- deterministic for a seed; ``random`` draws per item from a generator seeded by the seed and the item's id, ``bm25``
  ranks the pool by BM25 over the paragraph and question (the retrieval module's analysers) and takes the best K.

The chosen examples travel in the item's metadata (``FEW_SHOT_KEY``, as JSON), so they are part of the tokenization
cache's fingerprint, ride along with shifted copies (debiasing) and shared prefixes, and are rendered by the prompt
template as earlier user/assistant turns. When a prompt is too long, examples are dropped (the last, least similar,
first) before the item's own paragraph is shortened (``tokenization``).
"""

from __future__ import annotations

import json
import random
from collections.abc import Sequence
from dataclasses import replace
from typing import Literal

from suneung_lit.data.records import Item
from suneung_lit.data.splitting import paragraph_key

FewShotSelection = Literal["random", "bm25"]
FEW_SHOT_KEY = "few_shot_examples"
# BM25 candidates fetched per example asked for: the item's own group and too-similar duplicates are filtered after.
BM25_OVERFETCH = 8


def with_examples(
    items: Sequence[Item], pool: Sequence[Item], k: int, selection: FewShotSelection, seed: int, analyzer: str = "kiwi"
) -> list[Item]:
    """``items`` with ``k`` examples each from ``pool`` (labelled items only), as chosen by ``selection``."""
    pool = [example for example in pool if example.answer is not None]
    chosen = _bm25(items, pool, k, analyzer) if selection == "bm25" else _random(items, pool, k, seed)
    return [_attached(item, examples) for item, examples in zip(items, chosen, strict=True)]


def examples_of(item: Item) -> list[Item]:
    """The solved examples attached to ``item`` by ``with_examples``, in prompt order."""
    text = item.metadata.get(FEW_SHOT_KEY, "")
    if not text:
        return []
    fields = ("id", "paragraph", "question", "choices", "answer", "question_plus", "metadata")
    return [Item(**{**{name: e[name] for name in fields}, "choices": tuple(e["choices"])}) for e in json.loads(text)]


def without_last_example(item: Item) -> Item | None:
    """``item`` with its last (least similar) example dropped; None when it has none left to drop."""
    examples = examples_of(item)
    if not examples:
        return None
    return _attached(item, examples[:-1])


def example_ids(item: Item) -> list[str]:
    return [example.id for example in examples_of(item)]


def _eligible(item: Item, example: Item) -> bool:
    return example.id != item.id and paragraph_key(example) != paragraph_key(item)


def _random(items: Sequence[Item], pool: Sequence[Item], k: int, seed: int) -> list[list[Item]]:
    chosen = []
    for item in items:
        eligible = [example for example in pool if _eligible(item, example)]
        generator = random.Random(f"{seed}\x00{item.id}")
        chosen.append(generator.sample(eligible, min(k, len(eligible))))
    return chosen


def _bm25(items: Sequence[Item], pool: Sequence[Item], k: int, analyzer: str) -> list[list[Item]]:
    import bm25s

    from suneung_lit.retrieval.index import analyse

    retriever = bm25s.BM25()
    retriever.index(analyse([_query(example) for example in pool], analyzer), show_progress=False)
    fetch = min(len(pool), max(k * BM25_OVERFETCH, k + 1))
    rows, _ = retriever.retrieve(analyse([_query(item) for item in items], analyzer), k=fetch, show_progress=False)
    chosen = []
    for item, ranked in zip(items, rows, strict=True):
        picked = [pool[int(row)] for row in ranked if _eligible(item, pool[int(row)])][:k]
        if len(picked) < k:  # a query sharing few terms with the pool: fill up in pool order, deterministically
            taken = {example.id for example in picked}
            picked += [e for e in pool if _eligible(item, e) and e.id not in taken][: k - len(picked)]
        chosen.append(picked)
    return chosen


def _query(item: Item) -> str:
    return f"{item.paragraph}\n{item.question}\n{item.question_plus}"


def _attached(item: Item, examples: Sequence[Item]) -> Item:
    records = [
        {"id": e.id, "paragraph": e.paragraph, "question": e.question, "choices": list(e.choices),
         "answer": e.answer, "question_plus": e.question_plus,
         # Templates may read metadata columns (``support``); an example's own examples are never nested.
         "metadata": {key: value for key, value in e.metadata.items() if key != FEW_SHOT_KEY}}
        for e in examples
    ]  # fmt: skip
    metadata = {key: value for key, value in item.metadata.items() if key != FEW_SHOT_KEY}
    if records:
        metadata[FEW_SHOT_KEY] = json.dumps(records, ensure_ascii=False)
    return replace(item, metadata=metadata)
