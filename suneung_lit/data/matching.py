"""Finding the same question twice: cross-source de-duplication and train/test contamination reports."""

from __future__ import annotations

import re
import unicodedata
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass

from suneung_lit.data.records import Item

_NON_WORD = re.compile(r"[\W_]+")


def normalize(text: str) -> str:
    """NFKC, lower case, no spacing or punctuation: "다 ." and "다." compare equal."""
    return _NON_WORD.sub("", unicodedata.normalize("NFKC", text)).lower()


def question_key(item: Item) -> str:
    return normalize(item.question) + "\x1f" + "\x1f".join(normalize(c) for c in item.choices)


@dataclass(frozen=True)
class Removed:
    id: str
    source: str
    kept_id: str
    kept_source: str


def merge(sources: Sequence[tuple[str, Sequence[Item]]]) -> tuple[list[Item], list[Removed]]:
    """Concatenate sources in order, dropping items whose normalized question and choices were already seen."""
    kept: list[Item] = []
    removed: list[Removed] = []
    first: dict[str, tuple[Item, str]] = {}
    for source, items in sources:
        for item in items:
            key = question_key(item)
            if key in first:
                original, original_source = first[key]
                removed.append(Removed(item.id, source, original.id, original_source))
                continue
            first[key] = (item, source)
            kept.append(item)
    return kept, removed


def shingles(text: str, size: int) -> set[str]:
    text = normalize(text)
    if len(text) <= size:
        return {text} if text else set()
    return {text[i : i + size] for i in range(len(text) - size + 1)}


@dataclass(frozen=True)
class Overlap:
    test_id: str
    train_id: str
    field: str  # "paragraph" or "question+choices"
    similarity: float  # 1.0 for an exact normalized match


def _near_duplicates(
    test: Sequence[Item], train: Sequence[Item], text_of, field_name: str, size: int, threshold: float, min_chars: int
) -> list[Overlap]:
    index: dict[str, list[int]] = defaultdict(list)
    train_sets = []
    for position, item in enumerate(train):
        grams = shingles(text_of(item), size) if len(normalize(text_of(item))) >= min_chars else set()
        train_sets.append(grams)
        for gram in grams:
            index[gram].append(position)
    found = []
    for item in test:
        text = text_of(item)
        if len(normalize(text)) < min_chars:
            continue
        grams = shingles(text, size)
        shared: dict[int, int] = defaultdict(int)
        for gram in grams:
            for position in index.get(gram, ()):
                shared[position] += 1
        for position, count in shared.items():
            similarity = count / len(grams | train_sets[position])
            if similarity >= threshold:
                found.append(Overlap(item.id, train[position].id, field_name, round(similarity, 4)))
    return found


def find_overlap(
    train: Sequence[Item], test: Sequence[Item], threshold: float = 0.8, shingle: int = 5, min_chars: int = 20
) -> list[Overlap]:
    """Test items whose paragraph or question+choices match a training item exactly or by n-gram Jaccard.

    Texts shorter than ``min_chars`` after normalization are not compared (short generic questions would match
    everywhere). Each (test, train, field) pair is reported once, with its highest similarity.
    """
    found = _near_duplicates(test, train, lambda i: i.paragraph, "paragraph", shingle, threshold, min_chars)
    found += _near_duplicates(
        test, train, lambda i: i.question + " " + " ".join(i.choices), "question+choices", shingle, threshold, min_chars
    )
    return sorted(found, key=lambda o: (o.test_id, -o.similarity, o.train_id))
