"""Debiased option scoring: shifted copies are batched together and combined back into one row per item."""

from __future__ import annotations

import pytest
import torch

from suneung_lit.data.records import Item
from suneung_lit.data.shifting import scored_copies
from suneung_lit.debias import (
    PositionOffsets,
    PositionPrior,
    apply_offsets,
    combine,
    cyclic_average,
    fit_position_offsets,
    masked_log_softmax,
)

BIAS = torch.tensor([1.5, 0.5, 0.0, -0.5, -1.0])  # a model that likes early positions


def biased_rows(content: torch.Tensor, shifts: list[int]) -> torch.Tensor:
    """Log-probabilities a position-biased model gives shifted copies of one item (``content`` per choice)."""
    n = len(content)
    rows = []
    for shift in shifts:
        by_position = torch.stack([content[(p - shift) % n] for p in range(n)])
        rows.append((by_position + BIAS[:n]).log_softmax(-1))
    return torch.stack(rows)


def items(counts: list[int]) -> list[Item]:
    return [Item(f"q{i}", "지문", "질문", tuple("가나다라마"[:n]), 1) for i, n in enumerate(counts)]


def test_cyclic_rows_combine_to_the_content_scores_without_the_position_bias():
    content = torch.tensor([0.0, 0.8, 0.0, 0.0, 0.0])  # choice 2 is right, but position 1 wins without debiasing
    rows = biased_rows(content, list(range(5)))
    assert rows[0].argmax() == 0
    groups, combined = combine(rows, torch.zeros(5, dtype=torch.long), torch.arange(5), torch.full((5,), 5))
    assert combined.shape == (1, 5) and combined.argmax() == 1
    torch.testing.assert_close(combined[0], cyclic_average(dict(enumerate(rows)), 5).log_softmax(-1))


def test_pride_estimates_the_prior_from_calibration_items_and_removes_it_from_the_rest():
    prior = PositionPrior()
    generator = torch.Generator().manual_seed(0)
    for item in range(8):  # calibration items: every shift, random content
        content = torch.randn(5, generator=generator)
        combine(
            biased_rows(content, list(range(5))), torch.full((5,), item), torch.arange(5), torch.full((5,), 5), prior
        )
    torch.testing.assert_close(prior.log_prior(5), BIAS.log_softmax(-1), atol=1e-5, rtol=0)
    assert prior.log_prior(4) is None  # 4-choice items keep their own prior
    single = biased_rows(torch.tensor([0.0, 0.0, 0.9, 0.0, 0.0]), [0])
    assert single.argmax() == 0
    _, debiased = combine(single, torch.tensor([9]), torch.tensor([0]), torch.tensor([5]), prior)
    assert debiased.argmax() == 2


def test_items_mixing_one_and_all_shifts_in_one_batch_come_back_in_first_seen_order():
    four = biased_rows(torch.tensor([0.0, 0.0, 0.0, 2.0]), list(range(4)))
    five = biased_rows(torch.tensor([0.0, 2.0, 0.0, 0.0, 0.0]), [0])
    log_probs = torch.full((5, 5), torch.finfo(torch.float32).min)
    log_probs[:4, :4] = four
    log_probs[4] = five[0]
    groups, combined = combine(
        log_probs, torch.tensor([7, 7, 7, 7, 3]), torch.tensor([0, 1, 2, 3, 0]), torch.tensor([4, 4, 4, 4, 5])
    )
    assert groups.item_index.tolist() == [7, 3]
    assert combined.argmax(-1).tolist() == [3, 1]
    assert combined[0, 4] < -1e30  # the 4-choice item's fifth column stays masked


def test_a_partial_set_of_shifts_is_an_error():
    rows = biased_rows(torch.zeros(5), [0, 1])
    with pytest.raises(ValueError, match="2 copies in one batch"):
        combine(rows, torch.zeros(2, dtype=torch.long), torch.arange(2), torch.full((2,), 5))


def test_fitted_offsets_recover_a_known_position_bias():
    generator = torch.Generator().manual_seed(1)
    answers = torch.randint(0, 5, (400,), generator=generator)
    content = torch.nn.functional.one_hot(answers, 5).float() * 1.0 + torch.randn(400, 5, generator=generator) * 0.5
    observed = (content + BIAS).log_softmax(-1)
    counts = torch.full((400,), 5)
    offsets = fit_position_offsets(observed, answers, counts)
    torch.testing.assert_close(offsets[5] - offsets[5][0], BIAS - BIAS[0], atol=0.3, rtol=0)
    before = (observed.argmax(-1) == answers).float().mean()
    after = (apply_offsets(observed, counts, offsets).argmax(-1) == answers).float().mean()
    assert after > before + 0.05


def test_cyclic_copies_cover_every_shift_and_pride_calibrates_a_share_per_choice_count():
    data = items([4] * 40 + [5] * 60)
    cyclic = scored_copies(data, "cyclic", 0.05, seed=0)
    assert len(cyclic) == 40 * 4 + 60 * 5 and {c.item.id for c in cyclic} == {i.id for i in data}
    pride = scored_copies(data, "pride", 0.05, seed=0)
    calibrated = {c.item_index for c in pride if c.calibration}
    assert len(calibrated) == 2 + 3  # ceil(5% of 40), ceil(5% of 60)
    assert len(pride) == 100 + 2 * 3 + 3 * 4
    assert all(c.shift == 0 for c in pride if not c.calibration)
    assert scored_copies(data, "none", 0.05, seed=0)[5].item is data[5]


def test_masked_log_softmax_ignores_columns_past_the_choice_count():
    scores = torch.tensor([[1.0, 2.0, 3.0, 4.0, 100.0]])
    out = masked_log_softmax(scores, torch.tensor([4]))
    torch.testing.assert_close(out[0, :4].exp().sum(), torch.tensor(1.0))


def test_a_refit_on_scores_that_already_carry_the_offsets_does_not_compound_them():
    # fit's second validation sees scores with the first fit's offsets applied; refitting must land on the same
    # offsets (the plain scores have not changed), not on the bias subtracted twice.
    generator = torch.Generator().manual_seed(2)
    answers = torch.randint(0, 5, (300,), generator=generator)
    content = torch.nn.functional.one_hot(answers, 5).float() + torch.randn(300, 5, generator=generator) * 0.5
    plain, counts = (content + BIAS).log_softmax(-1), torch.full((300,), 5)
    offsets = PositionOffsets()
    offsets.start_collecting()
    offsets.collect(plain, answers, counts)
    offsets.fit()
    first = offsets.fitted[5].clone()
    offsets.start_collecting()
    offsets.collect(offsets.apply(plain, counts), answers, counts)
    offsets.fit()
    torch.testing.assert_close(offsets.fitted[5], first, atol=1e-3, rtol=0)
    assert float((first - first[0] - (BIAS - BIAS[0])).abs().max()) < 0.3
    # Unlabelled rows (answer -1) are left out of the fit.
    with_unlabelled = PositionOffsets()
    with_unlabelled.start_collecting()
    with_unlabelled.collect(torch.cat([plain, plain[:50]]), torch.cat([answers, torch.full((50,), -1)]),
                            torch.cat([counts, counts[:50]]))  # fmt: skip
    assert with_unlabelled.fit()[0] == 300
