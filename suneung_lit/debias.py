"""Option-position debiasing: score items under cyclic shifts of their choices, or subtract a position prior.

Language models prefer some option positions regardless of content (Zheng et al., ICLR 2024, "Large Language
Models Are Not Robust Multiple Choice Selectors"). Two remedies, both label-free:

- ``cyclic``: an item with ``n`` choices is scored under all ``n`` cyclic shifts; each shift's log-probabilities
  are mapped back to the original choices and averaged, so every choice is seen once at every position.
- ``pride``: the position prior is estimated from the cyclic passes of a small share of the items (PriDe); every
  other item is scored once and the log prior is subtracted. 4- and 5-choice items keep separate priors.

A third, labelled remedy fits per-position offsets on validation data (see ``fit_position_offsets``).
Shifted copies of an item are scored in one batch; the functions here turn a batch of rows (copies) into one
row per item.
"""

from __future__ import annotations

import math
import random
import time
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Literal

import torch
from torch import Tensor

from suneung_lit.data.records import Item

DebiasChoice = Literal["none", "cyclic", "pride", "offsets"]
SHIFT_SEPARATOR = "@shift"


def cyclic_shift(item: Item, shift: int) -> Item:
    """The item with choice ``j`` moved to position ``(j + shift) % n``; the answer follows its text."""
    n = item.num_choices
    choices = tuple(item.choices[(position - shift) % n] for position in range(n))
    answer = (item.answer - 1 + shift) % n + 1 if item.answer is not None else None
    return replace(item, id=f"{item.id}{SHIFT_SEPARATOR}{shift}", choices=choices, answer=answer)


@dataclass(frozen=True)
class ScoredCopy:
    """One row to score: an item (possibly with shifted choices), the original's index and the shift."""

    item: Item
    item_index: int
    shift: int
    calibration: bool  # one of PriDe's calibration items


def calibration_items(items: Sequence[Item], fraction: float, seed: int) -> set[int]:
    """A seeded ``fraction`` of the items of each choice count (at least one per count), by index."""
    by_count: dict[int, list[int]] = {}
    for index, item in enumerate(items):
        by_count.setdefault(item.num_choices, []).append(index)
    rng = random.Random(seed)
    chosen: set[int] = set()
    for indices in by_count.values():
        chosen.update(rng.sample(indices, max(1, math.ceil(fraction * len(indices)))))
    return chosen


def scored_copies(items: Sequence[Item], debias: DebiasChoice, fraction: float, seed: int) -> list[ScoredCopy]:
    """The rows an evaluation scores: each item once, or under all cyclic shifts (every item, or PriDe's few).

    Shifted copies keep the original id (predictions are per item); the shift is a separate column.
    """
    everywhere = debias == "cyclic"
    calibration = calibration_items(items, fraction, seed) if debias == "pride" else set()
    copies = []
    for index, item in enumerate(items):
        for shift in range(item.num_choices if everywhere or index in calibration else 1):
            shifted = replace(cyclic_shift(item, shift), id=item.id) if shift else item
            copies.append(ScoredCopy(shifted, index, shift, index in calibration))
    return copies


def split_shifted_id(shifted_id: str) -> tuple[str, int]:
    original, _, shift = shifted_id.rpartition(SHIFT_SEPARATOR)
    return original, int(shift)


def unshift_rows(log_probs: Tensor, shift: Tensor, num_choices: Tensor) -> Tensor:
    """Map each row's option log-probabilities from its shifted order back to the original choice order.

    Original choice ``j`` sat at position ``(j + shift) % n``. Columns past a row's choice count stay masked.
    """
    columns = torch.arange(log_probs.shape[-1], device=log_probs.device)
    n = num_choices.clamp(min=1).unsqueeze(1)
    source = (columns.unsqueeze(0) + shift.unsqueeze(1)) % n
    gathered = log_probs.gather(-1, source)
    return gathered.masked_fill(columns.unsqueeze(0) >= n, torch.finfo(log_probs.dtype).min)


def cyclic_average(copies: dict[int, Tensor], num_choices: int) -> Tensor:
    """Mean log-probability of each original choice over all its shifted copies: position bias cancels out."""
    if sorted(copies) != list(range(num_choices)):
        raise ValueError(f"need all {num_choices} shifts, got {sorted(copies)}")
    shifts = torch.tensor(sorted(copies))
    rows = torch.stack([copies[s][:num_choices] for s in sorted(copies)])
    return unshift_rows(rows, shifts, torch.full_like(shifts, num_choices)).mean(0)


@dataclass
class ItemRows:
    """Which rows of a batch belong to which item: ``rows[k]`` are the batch rows of the k-th item."""

    item_index: Tensor  # [items], the original item indices, in first-seen order
    rows: list[Tensor]  # each [copies]


def rows_by_item(item_index: Tensor) -> ItemRows:
    rows: dict[int, list[int]] = {}
    for row, item in enumerate(item_index.tolist()):
        rows.setdefault(item, []).append(row)
    device = item_index.device
    return ItemRows(torch.tensor(list(rows), device=device), [torch.tensor(r, device=device) for r in rows.values()])


class EvaluationCost:
    """Forward passes per item and items/s of one evaluation epoch."""

    def __init__(self) -> None:
        self.items = 0
        self.passes = 0
        self.started = time.perf_counter()

    def add(self, items: int, passes: int) -> None:
        self.items += items
        self.passes += passes

    def __str__(self) -> str:
        seconds = time.perf_counter() - self.started
        return (
            f"{self.passes / max(self.items, 1):.2f} forward passes per item, {self.items} items in {seconds:.1f} s "
            f"({self.items / max(seconds, 1e-9):.2f} items/s)"
        )


class PositionPrior:
    """PriDe's position prior per choice count, estimated from items scored under all their cyclic shifts.

    For one such item, averaging the observed log-probability at each position over all shifts averages the
    content away; its softmax is that item's prior. The prior is the mean of those over calibration items.
    """

    def __init__(self) -> None:
        self.sums: dict[int, Tensor] = {}
        self.counts: dict[int, int] = {}

    def update(self, shifted_log_probs: Tensor, num_choices: int) -> None:
        """``shifted_log_probs``: [n shifts, >= n] log-probabilities by position, one row per shift."""
        estimate = shifted_log_probs[:, :num_choices].float().mean(0).softmax(-1).cpu()
        self.sums[num_choices] = self.sums.get(num_choices, torch.zeros(num_choices)) + estimate
        self.counts[num_choices] = self.counts.get(num_choices, 0) + 1

    def log_prior(self, num_choices: int) -> Tensor | None:
        if not self.counts.get(num_choices):
            return None
        return (self.sums[num_choices] / self.counts[num_choices]).log()

    def __repr__(self) -> str:
        shown = {n: [round(p, 3) for p in (self.sums[n] / self.counts[n]).tolist()] for n in sorted(self.sums)}
        return f"PositionPrior({shown}, items={self.counts})"


def masked_log_softmax(scores: Tensor, num_choices: Tensor) -> Tensor:
    columns = torch.arange(scores.shape[-1], device=scores.device)
    beyond = columns.unsqueeze(0) >= num_choices.unsqueeze(1)
    return scores.masked_fill(beyond, float("-inf")).log_softmax(-1).masked_fill(beyond, torch.finfo(scores.dtype).min)


def combine(
    log_probs: Tensor,
    item_index: Tensor,
    shift: Tensor,
    num_choices: Tensor,
    prior: PositionPrior | None = None,
) -> tuple[ItemRows, Tensor]:
    """One row of debiased log-probabilities per item of a batch, in the original choice order.

    Items with all their shifts in the batch get the cyclic average (and, when ``prior`` is given, feed it
    first); items scored once get the prior subtracted when one is known for their choice count.
    """
    groups = rows_by_item(item_index)
    out = []
    for rows in groups.rows:
        n = int(num_choices[rows[0]])
        if len(rows) == n:
            if prior is not None:
                by_shift = log_probs[rows][shift[rows].argsort()]
                prior.update(by_shift, n)
            unshifted = unshift_rows(log_probs[rows], shift[rows], num_choices[rows])
            row = unshifted.mean(0, keepdim=True)
        elif len(rows) == 1:
            row = log_probs[rows]
            log_prior = prior.log_prior(n) if prior is not None else None
            if log_prior is not None:
                row = row.clone()
                row[0, :n] = row[0, :n] - log_prior.to(row.device, row.dtype)
            row = unshift_rows(row, shift[rows], num_choices[rows])
        else:
            raise ValueError(f"item {int(item_index[rows[0]])}: {len(rows)} copies in one batch, expected 1 or {n}")
        out.append(masked_log_softmax(row, num_choices[rows[:1]]))
    return groups, torch.cat(out)


def apply_offsets(log_probs: Tensor, num_choices: Tensor, offsets: dict[int, Tensor]) -> Tensor:
    """Subtract fitted per-position log offsets (from ``fit_position_offsets``) and renormalise."""
    adjusted = log_probs.clone()
    for n, offset in offsets.items():
        rows = num_choices == n
        adjusted[rows, :n] -= offset.to(adjusted.device, adjusted.dtype)
    return masked_log_softmax(adjusted, num_choices)


def fit_position_offsets(
    log_probs: Tensor, answers: Tensor, num_choices: Tensor, steps: int = 200
) -> dict[int, Tensor]:
    """Per-position log offsets (per choice count) that minimise held-out NLL of ``log_probs - offset``.

    A convex problem in ``n - 1`` free values per choice count (offset of position 1 fixed at 0), solved with
    L-BFGS. Labels are used, so fit on validation data and apply to test/predict.
    """
    return {
        n: _fit_offsets(log_probs[num_choices == n, :n], answers[num_choices == n], steps) for n in _counts(num_choices)
    }


def _counts(num_choices: Tensor) -> list[int]:
    return sorted(set(num_choices.tolist()))


def _fit_offsets(scores: Tensor, gold: Tensor, steps: int) -> Tensor:
    scores = scores.float().detach().cpu()
    gold = gold.cpu()
    free = torch.zeros(scores.shape[-1] - 1, requires_grad=True)
    optimizer = torch.optim.LBFGS([free], max_iter=steps, line_search_fn="strong_wolfe")

    def closure() -> Tensor:
        optimizer.zero_grad()
        loss = torch.nn.functional.cross_entropy(scores - torch.cat([torch.zeros(1), free]), gold)
        loss.backward()
        return loss

    optimizer.step(closure)
    return torch.cat([torch.zeros(1), free.detach()])
