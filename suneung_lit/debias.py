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

from dataclasses import dataclass

import torch
from torch import Tensor

from suneung_lit.data.shifting import DebiasChoice


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


def debiased(
    log_probs: Tensor,
    item_index: Tensor,
    shift: Tensor,
    num_choices: Tensor,
    mode: DebiasChoice,
    prior: PositionPrior,
    offsets: PositionOffsets,
) -> tuple[Tensor, Tensor]:
    """One row of log-probabilities per item of a batch, debiased by ``mode``, and each item's first batch row."""
    if mode in ("cyclic", "pride"):
        groups, item_log_probs = combine(log_probs, item_index, shift, num_choices, prior if mode == "pride" else None)
        return item_log_probs, torch.stack([rows[0] for rows in groups.rows])
    first = torch.arange(len(log_probs), device=log_probs.device)
    if mode == "offsets" and offsets:
        return offsets.apply(log_probs, num_choices), first
    return log_probs, first


class PositionOffsets:
    """Per-position offsets fitted on labelled validation scores; kept in the checkpoint, applied by test and predict.

    Validation collects its undebiased scores; ``fit`` then replaces the offsets. Scores collected while earlier
    offsets were applied are fitted with those offsets added back, so refits do not compound.
    """

    def __init__(self, fitted: dict[int, Tensor] | None = None) -> None:
        self.fitted: dict[int, Tensor] = dict(fitted or {})
        self._collected: list[tuple[Tensor, Tensor, Tensor]] = []

    def __bool__(self) -> bool:
        return bool(self.fitted)

    def start_collecting(self) -> None:
        self._collected = []

    def collect(self, log_probs: Tensor, answers: Tensor, num_choices: Tensor) -> None:
        self._collected.append((log_probs.detach().cpu(), answers.cpu(), num_choices.cpu()))

    def apply(self, log_probs: Tensor, num_choices: Tensor) -> Tensor:
        return apply_offsets(log_probs, num_choices, self.fitted)

    def fit(self) -> tuple[int, float] | None:
        """Refit from the collected scores; the number of labelled items and their in-sample accuracy."""
        if not self._collected:
            return None
        log_probs, answers, counts = (torch.cat(parts) for parts in zip(*self._collected, strict=True))
        labelled = answers >= 0
        plain, answers, counts = log_probs[labelled].clone(), answers[labelled], counts[labelled]
        for n, offset in self.fitted.items():
            plain[counts == n, :n] += offset
        self.fitted = fit_position_offsets(plain, answers, counts)
        corrected = apply_offsets(plain, counts, self.fitted).argmax(-1)
        return int(labelled.sum()), float((corrected == answers).float().mean())

    def state(self) -> dict[int, list[float]]:
        return {n: t.tolist() for n, t in self.fitted.items()}

    @classmethod
    def from_state(cls, state: dict) -> PositionOffsets:
        return cls({int(n): torch.tensor(v) for n, v in state.items()})

    def __repr__(self) -> str:
        return repr({n: [round(v, 3) for v in t.tolist()] for n, t in self.fitted.items()})


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
