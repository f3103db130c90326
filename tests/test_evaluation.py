"""Accuracy statistics and answer-balanced copies: the yardsticks every accuracy claim is read against."""

from __future__ import annotations

import math
from collections import Counter

import pytest
import torch

from suneung_lit.data.records import Item
from suneung_lit.data.shifting import cyclic_shift, split_shifted_id
from suneung_lit.debias import cyclic_average, unshift_rows
from suneung_lit.evaluation import accuracy, balanced_copies, best_constant, paired_difference, wilson_interval

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


def test_identical_runs_differ_by_nothing_with_p_one():
    result = paired_difference([True, False, True], [True, False, True])
    assert result.difference == 0 and result.p_value == 1.0
    with pytest.raises(ValueError, match="3 items in run A, 2 in run B"):
        paired_difference([True, False, True], [True, False])
