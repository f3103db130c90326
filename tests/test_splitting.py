"""The validation split never puts one paragraph on both sides and keeps answer positions balanced."""

from __future__ import annotations

from collections import Counter

from suneung_lit.data.records import Item
from suneung_lit.data.splitting import grouped_split, paragraph_key


def items_sharing_paragraphs(groups: int = 40, per_group: int = 3) -> list[Item]:
    items = []
    for g in range(groups):
        for q in range(per_group):
            n = g * per_group + q
            items.append(
                Item(f"i{n}", f"지문 {g}번 이야기이다.", f"질문 {q}?", ("가", "나", "다", "라", "마"), n % 5 + 1)
            )
    return items


def test_no_paragraph_lands_on_both_sides():
    train, val = grouped_split(items_sharing_paragraphs(), val_fraction=0.2, seed=1)
    assert {paragraph_key(i) for i in train}.isdisjoint({paragraph_key(i) for i in val})
    assert len(train) + len(val) == 120 and len(val) == 24


def test_split_is_reproducible_and_seed_dependent():
    items = items_sharing_paragraphs()
    assert grouped_split(items, 0.2, seed=1) == grouped_split(items, 0.2, seed=1)
    assert grouped_split(items, 0.2, seed=1)[1] != grouped_split(items, 0.2, seed=2)[1]


def test_paragraphs_differing_only_in_spacing_are_one_group():
    a = Item("a", "같은 지문 이다.", "질문?", ("가", "나"), 1)
    b = Item("b", "같은  지문이다 .", "질문?", ("가", "나"), 2)
    assert paragraph_key(a) == paragraph_key(b)


def test_answer_positions_are_stratified():
    items = [
        Item(f"i{n}", f"지문 {n}", "질문?", ("가", "나", "다", "라"), 1 if n % 2 else n % 4 + 1) for n in range(400)
    ]
    _, val = grouped_split(items, val_fraction=0.25, seed=3)
    overall, held_out = Counter(i.answer for i in items), Counter(i.answer for i in val)
    for answer, count in overall.items():
        assert abs(held_out[answer] / len(val) - count / len(items)) < 0.03
