"""Accuracy statistics and answer-balanced copies: the yardsticks every accuracy claim is read against."""

from __future__ import annotations

import itertools
import math
from collections import Counter

import pytest
import torch

from suneung_lit.data.records import Item
from suneung_lit.data.shifting import cyclic_shift, split_shifted_id
from suneung_lit.debias import cyclic_average, unshift_rows
from suneung_lit.evaluation import (
    accuracy,
    balanced_copies,
    best_constant,
    paired_difference,
    sign_flip_p_value,
    wilson_interval,
)

ITEM = Item("q1", "지문", "옳은 것은?", ("가", "나", "다", "라", "마"), 2)


def test_wilson_interval_matches_the_textbook_values():
    low, high = wilson_interval(8, 10)
    assert math.isclose(low, 0.4902, abs_tol=1e-4) and math.isclose(high, 0.9433, abs_tol=1e-4)
    assert wilson_interval(0, 20)[0] == 0.0 and wilson_interval(20, 20)[1] == 1.0


def test_cyclic_shift_moves_every_choice_and_the_answer_follows_its_text():
    shifted = cyclic_shift(ITEM, 2)
    assert shifted.choices == ("라", "마", "가", "나", "다")
    assert shifted.choices[shifted.answer - 1] == "나" and shifted.id == "q1@shift2"
    assert split_shifted_id(shifted.id) == ("q1", 2)


def test_balanced_copies_make_every_position_the_answer_equally_often():
    four = Item("q2", "지문", "질문", ("a", "b", "c", "d"), 1)
    copies = balanced_copies([ITEM, four])
    assert Counter((c.num_choices, c.answer) for c in copies) == {(5, p): 1 for p in range(1, 6)} | {
        (4, p): 1 for p in range(1, 5)
    }


def test_best_constant_predictor_is_the_most_common_answer():
    position, score = best_constant([1, 1, 2, 4, 1], [4, 4, 4, 4, 5])
    assert position == 1 and score.correct == 3 and score.total == 5


def test_unshifting_restores_the_original_choice_order():
    original = torch.tensor([0.1, 0.2, 0.3, 0.4, 0.5]).log()
    for shift in range(5):
        shifted = cyclic_shift(ITEM, shift)
        shifted_log_probs = torch.stack([original[ITEM.choices.index(text)] for text in shifted.choices])
        torch.testing.assert_close(
            unshift_rows(shifted_log_probs[None], torch.tensor([shift]), torch.tensor([5]))[0], original
        )


def test_cyclic_average_cancels_a_pure_position_bias():
    # A model that always prefers position 1 by a fixed margin but also likes the true answer's text ("나").
    bias = torch.tensor([2.0, 0.0, 0.0, 0.0, 0.0])
    copies = {}
    for shift in range(5):
        shifted = cyclic_shift(ITEM, shift)
        content = torch.tensor([1.0 if text == "나" else 0.0 for text in shifted.choices])
        copies[shift] = (bias + content).log_softmax(-1)
    plain_choice = copies[0].argmax().item() + 1
    assert plain_choice == 1  # the bias wins without debiasing
    assert cyclic_average(copies, 5).argmax().item() + 1 == ITEM.answer
    with pytest.raises(ValueError, match="need all 5 shifts"):
        cyclic_average({0: copies[0]}, 5)


def test_accuracy_refuses_mismatched_lengths():
    assert accuracy([1, 2], [1, 3]).correct == 1
    with pytest.raises(ValueError):
        accuracy([1], [1, 2])


def test_paired_difference_counts_discordant_items_and_gives_the_exact_mcnemar_p():
    a = [True] * 10 + [False] * 10 + [True] * 5
    b = [True] * 10 + [True] * 10 + [False] * 5
    result = paired_difference(a, b)
    assert (result.only_a, result.only_b, result.total) == (5, 10, 25)
    assert result.difference == pytest.approx(0.2)
    # two-sided exact binomial: P(X <= 5 | 15, 1/2) * 2
    assert result.p_value == pytest.approx(2 * sum(math.comb(15, k) for k in range(6)) / 2**15)
    low, high = result.interval
    assert low < 0.2 < high


def test_shifted_copies_of_one_item_count_as_one_unit_of_evidence():
    # Three items, each right in B and wrong in A under all five shifts: fifteen rows but three units.
    a, b = [False] * 15, [True] * 15
    items = [f"q{i}" for i in range(3) for _ in range(5)]
    as_rows, as_items = paired_difference(a, b), paired_difference(a, b, items)
    assert as_rows.p_value == pytest.approx(2 / 2**15)
    assert as_items.p_value == pytest.approx(2 / 2**3) and as_items.clusters == 3
    assert as_items.difference == as_rows.difference == 1.0


def test_a_gain_and_a_loss_within_one_item_cancel_before_the_test():
    # Eight items, each gaining two shifted copies and losing one: as rows 16 against 8 (McNemar p = 0.15), as
    # items eight net gains out of eight (p = 2 / 2**8).
    a = [False, False, True] * 8
    b = [True, True, False] * 8
    items = [f"q{i}" for i in range(8) for _ in range(3)]
    assert paired_difference(a, b).p_value == pytest.approx(2 * sum(math.comb(24, k) for k in range(9)) / 2**24)
    result = paired_difference(a, b, items)
    assert result.p_value == pytest.approx(2 / 2**8)
    assert "8 items, 24" in str(result) and "sign-flip" in str(result)


def test_the_sign_flip_p_value_is_exact_against_enumerating_every_sign_pattern():
    gains = [3, -1, 2, 0, 5, -2, 1, 4, -3, 2]
    observed = abs(sum(gains))
    patterns = list(itertools.product((1, -1), repeat=len(gains)))
    enumerated = sum(abs(sum(s * g for s, g in zip(signs, gains, strict=True))) >= observed for signs in patterns)
    assert sign_flip_p_value(gains) == pytest.approx(enumerated / len(patterns))
    assert sign_flip_p_value([]) == 1.0


def test_the_interval_of_clustered_rows_widens_when_copies_move_together():
    # The same 10 gained rows of 40, spread over ten items or packed into two: packing is less evidence.
    a = [False] * 40
    b = ([True] + [False] * 3) * 10
    spread = paired_difference(a, b, [f"q{i // 4}" for i in range(40)])
    packed_b = [True] * 5 + [False] * 15 + [True] * 5 + [False] * 15
    packed = paired_difference(a, packed_b, [f"q{i // 4}" for i in range(40)])
    assert spread.difference == packed.difference == 0.25
    assert packed.standard_error > spread.standard_error
    assert packed.p_value > spread.p_value


def test_identical_runs_differ_by_nothing_with_p_one():
    result = paired_difference([True, False, True], [True, False, True])
    assert result.difference == 0 and result.p_value == 1.0
    with pytest.raises(ValueError, match="3 items in run A, 2 in run B"):
        paired_difference([True, False, True], [True, False])
    with pytest.raises(ValueError, match="2 cluster labels for 3 rows"):
        paired_difference([True, False, True], [True, True, True], ["q1", "q1"])
