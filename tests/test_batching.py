"""Evaluation batch orders: longest first, shifted copies together, an optional padded-token budget."""

from __future__ import annotations

from suneung_lit.data.batching import sorted_batches


def test_shifted_copies_stay_in_one_batch_and_calibration_items_lead():
    units = [0, 0, 0, 0, 1, 2, 2, 2, 2, 2, 3]
    lengths = [10, 12, 10, 11, 50, 30, 30, 31, 30, 30, 5]
    leading = [False] * 5 + [True] * 5 + [False]
    batches = sorted_batches(lengths, 6, units, leading)
    assert batches[0][:5] == [5, 6, 7, 8, 9]  # the calibration item first, then the longest others
    for batch in batches:
        for unit in {units[r] for r in batch}:
            assert {r for r, u in enumerate(units) if u == unit} <= set(batch)
    assert sorted(r for b in batches for r in b) == list(range(len(units)))


def test_a_token_budget_packs_short_items_densely_and_long_ones_sparsely():
    lengths = [1000, 900, 120, 100, 100, 90, 80, 60, 50, 40]
    batches = sorted_batches(lengths, None, max_tokens=1000)
    assert batches[0] == [0] and batches[1] == [1]  # longest first, one at a time
    assert all(len(b) * max(lengths[r] for r in b) <= 1000 for b in batches)
    assert len(batches[2]) == 8  # 8 rows x 120 tokens fit the budget
    assert sorted(r for b in batches for r in b) == list(range(len(lengths)))


def test_a_unit_larger_than_the_budget_still_gets_a_batch_of_its_own():
    batches = sorted_batches([300] * 5 + [10], None, units=[0] * 5 + [1], max_tokens=1000)
    assert batches == [[0, 1, 2, 3, 4], [5]]
