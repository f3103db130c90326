"""Evaluation batch orders: longest first, shifted copies together, an optional padded-token budget."""

from __future__ import annotations

import pytest

from suneung_lit.data.batching import ResumableBatchSampler, sorted_batches, split_to_multiple


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


def test_sharded_evaluation_splits_batches_between_units_until_every_rank_has_as_many():
    # 7 items of 2 copies each, 4 rows a batch: 4 batches; 3 ranks need 6. Copies never part, no row is lost.
    units = [row // 2 for row in range(14)]
    lengths = [10] * 14
    plain = sorted_batches(lengths, 4, units)
    assert len(plain) == 4
    ranks = [ResumableBatchSampler(lengths, 4, shuffle=False, rank=r, world_size=3, units=units, even_batches=True)
             for r in range(3)]  # fmt: skip
    shards = [list(sampler) for sampler in ranks]
    assert [len(shard) for shard in shards] == [2, 2, 2]
    rows = [row for shard in shards for batch in shard for row in batch]
    assert sorted(rows) == list(range(14))
    for batch in (batch for shard in shards for batch in shard):
        for unit in {units[row] for row in batch}:
            assert {2 * unit, 2 * unit + 1} <= set(batch)
    assert split_to_multiple(plain, 1) == plain


def test_sharded_evaluation_refuses_what_cannot_be_shared_evenly():
    with pytest.raises(ValueError, match="cannot be shared evenly by 2 sharded ranks"):
        split_to_multiple([[0, 1, 2]], 2, units=[0, 0, 0])
