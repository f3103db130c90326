"""Few-shot examples: K solved items from a pool (the training file by default) put before each item's own turn.

The 2024 team nlp-10 found two examples in the prompt of an untuned Qwen2.5-32B beat their fine-tune on the private
board, and the 2025 runner-up put three retrieved train items in every prompt. Rules that keep a reading honest:

- never the item itself, never an item of its paragraph group (``splitting.paragraph_key``): the example must not
  give the answer away;
- never a validation, test or predict item (the caller leaves them out of the pool);
- deterministic for a seed; ``random`` draws per item from a generator seeded by the seed and the item's id, ``bm25``
  ranks the pool by BM25 over the paragraph and question (the retrieval module's analysers), ``dense`` by cosine
  similarity of a local sentence-transformers encoder's embeddings; both take the best K eligible.

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

FewShotSelection = Literal["random", "bm25", "dense"]
FEW_SHOT_KEY = "few_shot_examples"
# Ranked candidates fetched per example asked for: the item's own paragraph group is filtered out after ranking.
OVERFETCH = 8


def with_examples(
    items: Sequence[Item],
    pool: Sequence[Item],
    k: int,
    selection: FewShotSelection,
    seed: int,
    analyzer: str = "kiwi",
    encoder: str | None = None,
) -> list[Item]:
    """``items`` with ``k`` examples each from ``pool`` (labelled items only), as chosen by ``selection``
    (``encoder``: the sentence-transformers folder ``dense`` embeds with)."""
    pool = [example for example in pool if example.answer is not None]
    if selection == "random":
        chosen = _random(items, pool, k, seed)
    else:
        fetch = min(len(pool), max(k * OVERFETCH, k + 1))
        rows = (
            _bm25_rows(items, pool, fetch, analyzer)
            if selection == "bm25"
            else _dense_rows(items, pool, fetch, encoder)
        )
        chosen = [_best_eligible(item, pool, ranked, k) for item, ranked in zip(items, rows, strict=True)]
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


def _bm25_rows(items: Sequence[Item], pool: Sequence[Item], fetch: int, analyzer: str) -> list[list[int]]:
    import bm25s

    from suneung_lit.retrieval.index import analyse

    retriever = bm25s.BM25()
    retriever.index(analyse([_query(example) for example in pool], analyzer), show_progress=False)
    rows, _ = retriever.retrieve(analyse([_query(item) for item in items], analyzer), k=fetch, show_progress=False)
    return [[int(row) for row in ranked] for ranked in rows]


def _dense_rows(items: Sequence[Item], pool: Sequence[Item], fetch: int, encoder: str | None) -> list[list[int]]:
    if not encoder:
        raise ValueError("data.few_shot_selection dense needs data.few_shot_encoder, a sentence-transformers folder")
    from suneung_lit.retrieval import dense

    embeddings = dense.encode(encoder, [_query(example) for example in pool])
    rows, _ = dense.top_k(embeddings, dense.encode(encoder, [_query(item) for item in items]), fetch)
    return [[int(row) for row in ranked] for ranked in rows]


def _best_eligible(item: Item, pool: Sequence[Item], ranked: Sequence[int], k: int) -> list[Item]:
    """The first ``k`` eligible pool items in ``ranked`` order; too few ranked (a query sharing few terms with the
    pool): filled up in pool order, deterministically."""
    picked = [pool[row] for row in ranked if _eligible(item, pool[row])][:k]
    if len(picked) < k:
        taken = {example.id for example in picked}
        picked += [e for e in pool if _eligible(item, e) and e.id not in taken][: k - len(picked)]
    return picked


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
