"""Batches: left-padded collation and length-grouped batch orders that can resume mid-epoch."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from typing import Any

import torch
from torch.utils.data import DataLoader, Sampler


def left_pad(
    sequences: Sequence[Sequence[int] | torch.Tensor], pad_token_id: int, device: torch.device | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Token id rows padded on the left to one width, and their attention mask: the last position of every row
    is its last real token."""
    width = max(len(sequence) for sequence in sequences)
    input_ids = torch.full((len(sequences), width), pad_token_id, dtype=torch.long, device=device)
    attention_mask = torch.zeros((len(sequences), width), dtype=torch.long, device=device)
    for i, sequence in enumerate(sequences):
        input_ids[i, width - len(sequence) :] = torch.as_tensor(sequence, dtype=torch.long, device=device)
        attention_mask[i, width - len(sequence) :] = 1
    return input_ids, attention_mask


class LeftPadCollator:
    """Pads on the left, so the last position of every row is the answer position."""

    def __init__(self, pad_token_id: int, groups: Sequence[str] = ()):
        self.pad_token_id = pad_token_id
        self.group_index = {name: i for i, name in enumerate(groups)}

    def __call__(self, rows: list[dict[str, Any]]) -> dict[str, Any]:
        input_ids, attention_mask = left_pad([row["input_ids"] for row in rows], self.pad_token_id)
        return {
            "input_ids": input_ids,
            "attention_mask": attention_mask,
            "labels": torch.tensor([row["label"] for row in rows], dtype=torch.long),
            "answer": torch.tensor([row["answer"] for row in rows], dtype=torch.long),
            "num_choices": torch.tensor([row["num_choices"] for row in rows], dtype=torch.long),
            "index": torch.tensor([row["index"] for row in rows], dtype=torch.long),
            # The original item a row scores and the cyclic shift of its choices (debiased evaluation).
            "item_index": torch.tensor([row.get("item_index", row["index"]) for row in rows], dtype=torch.long),
            "shift": torch.tensor([row.get("shift", 0) for row in rows], dtype=torch.long),
            # Rows of one shared-prompt-prefix group (prefix reuse in predict); -1 for rows scored plainly.
            "prefix_group": torch.tensor([row.get("prefix_group", -1) for row in rows], dtype=torch.long),
            "prefix_length": torch.tensor([row.get("prefix_length", 0) for row in rows], dtype=torch.long),
            # Assistant-turn tokens before the answer digit that rationale training puts its loss on.
            "reasoning_length": torch.tensor([row.get("reasoning_length", 0) for row in rows], dtype=torch.long),
            "group": torch.tensor([self.group_index.get(row["group"], -1) for row in rows], dtype=torch.long),
            # Exam points of the item (``suneung_lit.exam``), 0 where it carries no score.
            "score": torch.tensor([row.get("score", 0.0) for row in rows], dtype=torch.float32),
            "id": [row["id"] for row in rows],
        }


def sorted_batches(
    lengths: Sequence[int],
    batch_size: int | None,
    units: Sequence[int] | None = None,
    leading: Sequence[bool] | None = None,
    max_tokens: int | None = None,
) -> list[list[int]]:
    """Evaluation order: longest first (an out-of-memory error shows at once), similar lengths together.

    A batch holds at most ``batch_size`` rows (no limit when None) and, with ``max_tokens``, at most that many
    padded tokens (rows x longest row), so short items fill large batches and long ones come a few at a time;
    a single unit larger than the limits gets a batch of its own. Rows that share a unit (the shifted copies of
    one item, a group of rows that share a prompt prefix) stay in one batch. Units marked ``leading`` come first
    (PriDe's calibration items, whose passes estimate the prior the other items need).
    """
    members: dict[int, list[int]] = {}
    for row in range(len(lengths)):
        members.setdefault(units[row] if units is not None else row, []).append(row)
    first = leading or [False] * len(lengths)
    widths = {unit: max(lengths[r] for r in rows) for unit, rows in members.items()}
    order = sorted(members, key=lambda unit: (not first[members[unit][0]], -widths[unit], members[unit][0]))
    batches: list[list[int]] = []
    current: list[int] = []
    width = 0
    for unit in order:
        rows = len(current) + len(members[unit])
        too_many = batch_size is not None and rows > batch_size
        too_wide = max_tokens is not None and rows * max(width, widths[unit]) > max_tokens
        if current and (too_many or too_wide):
            batches.append(current)
            current, width = [], 0
        current = current + members[unit]
        width = max(width, widths[unit])
    return batches + ([current] if current else [])


def split_to_multiple(batches: list[list[int]], world_size: int, units: Sequence[int] | None = None) -> list[list[int]]:
    """``batches`` with some split in two, between units (an item's copies, a shared-prefix group stay together),
    until their count is a multiple of ``world_size``: under FSDP every rank must run as many forward passes as
    the others, since each pass gathers every layer's weights from all of them. The batch with the most units is
    split first; every row stays, in the same order. Raises when no batch has two units left to split."""
    batches = [list(batch) for batch in batches]

    def parts(batch: list[int]) -> list[list[int]]:
        groups: list[list[int]] = []
        for row in batch:
            if groups and units is not None and units[groups[-1][-1]] == units[row]:
                groups[-1].append(row)
            else:
                groups.append([row])
        return groups

    while len(batches) % world_size:
        count, index = max((len(parts(batch)), i) for i, batch in enumerate(batches))
        if count < 2:
            raise ValueError(
                f"{len(batches)} evaluation batches of one item each cannot be shared evenly by {world_size} "
                "sharded ranks: evaluate more items, or on fewer devices"
            )
        halves = parts(batches[index])
        middle = len(halves) // 2
        batches[index : index + 1] = [sum(halves[:middle], []), sum(halves[middle:], [])]
    return batches


def grouped_shuffled_batches(
    lengths: Sequence[int], batch_size: int, seed: int, pool_batches: int = 64
) -> list[list[int]]:
    """Training order: shuffle, sort by length inside pools of ``pool_batches`` batches, shuffle the batches.

    Batches hold items of similar length (little padding) while the order stays random across epochs.
    """
    generator = torch.Generator().manual_seed(seed)
    order = torch.randperm(len(lengths), generator=generator).tolist()
    pool = batch_size * pool_batches
    batches = []
    for start in range(0, len(order), pool):
        chunk = sorted(order[start : start + pool], key=lambda i: -lengths[i])
        batches += [chunk[i : i + batch_size] for i in range(0, len(chunk), batch_size)]
    permutation = torch.randperm(len(batches), generator=generator).tolist()
    return [batches[i] for i in permutation]


class ResumableBatchSampler(Sampler[list[int]]):
    """A batch order for one split: seeded and reshuffled each epoch for training, longest-first otherwise.

    Each rank of a distributed run takes every ``world_size``-th batch of the same global order, so the package
    shards data itself (the CLI turns Lightning's distributed sampler off). ``units`` (evaluation) keeps rows of
    one unit in one batch; ``even_batches`` gives every rank as many evaluation batches (FSDP).
    """

    def __init__(
        self,
        lengths: Sequence[int],
        batch_size: int,
        seed: int = 0,
        shuffle: bool = True,
        group_by_length: bool = True,
        rank: int = 0,
        world_size: int = 1,
        units: Sequence[int] | None = None,
        leading: Sequence[bool] | None = None,
        rows_for_epoch: Callable[[int], list[int]] | None = None,
        max_tokens: int | None = None,
        even_batches: bool = False,
    ):
        self.lengths = list(lengths)
        # Evaluation under FSDP: every rank gets as many batches (see ``split_to_multiple``).
        self.even_batches = even_batches
        # Training on a different subset of rows each epoch (one answer-balanced shift per item).
        self.rows_for_epoch = rows_for_epoch
        # Evaluation only: a padded-token budget per batch replaces the row count.
        self.max_tokens = max_tokens
        self.units = list(units) if units is not None else None
        self.leading = list(leading) if leading is not None else None
        self.batch_size = batch_size
        self.seed = seed
        self.shuffle = shuffle
        self.group_by_length = group_by_length
        self.rank = rank
        self.world_size = world_size
        self.epoch = 0
        self.served = 0  # batches handed out in the current epoch
        self._skip = 0

    def _epoch_batches(self) -> list[list[int]]:
        seed = self.seed + self.epoch
        if not self.shuffle:
            if self.group_by_length or self.units is not None or self.max_tokens is not None:
                size = None if self.max_tokens is not None else self.batch_size
                batches = sorted_batches(self.lengths, size, self.units, self.leading, self.max_tokens)
            else:
                batches = [
                    list(range(i, min(i + self.batch_size, len(self.lengths))))
                    for i in range(0, len(self.lengths), self.batch_size)
                ]
            # Evaluation keeps every item: ranks may get one batch more than others, unless sharded.
            if self.even_batches and self.world_size > 1:
                batches = split_to_multiple(batches, self.world_size, self.units)
            return batches[self.rank :: self.world_size]
        rows = self.rows_for_epoch(seed) if self.rows_for_epoch is not None else list(range(len(self.lengths)))
        lengths = [self.lengths[r] for r in rows]
        if self.group_by_length:
            batches = grouped_shuffled_batches(lengths, self.batch_size, seed)
        else:
            order = torch.randperm(len(lengths), generator=torch.Generator().manual_seed(seed)).tolist()
            batches = [order[i : i + self.batch_size] for i in range(0, len(order), self.batch_size)]
        batches = [[rows[i] for i in batch] for batch in batches]
        # Every rank must run the same number of steps: drop the ragged tail of the batch list.
        usable = len(batches) - len(batches) % self.world_size if self.world_size > 1 else len(batches)
        return batches[self.rank : usable : self.world_size]

    def __iter__(self) -> Iterator[list[int]]:
        batches = self._epoch_batches()
        start, self._skip = self._skip, 0
        self.served = start
        for batch in batches[start:]:
            self.served += 1
            yield batch
        self.epoch += 1
        self.served = 0

    def __len__(self) -> int:
        if not self.shuffle:
            return len(self._epoch_batches())
        served = len(self.rows_for_epoch(self.seed)) if self.rows_for_epoch is not None else len(self.lengths)
        count = -(-served // self.batch_size)
        if not self.shuffle:
            return len(range(self.rank, count, self.world_size))
        return count // self.world_size if self.world_size > 1 else count

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch


class ResumableDataLoader(DataLoader):
    """A DataLoader whose position (epoch, batches consumed) is saved in Lightning checkpoints."""

    def __init__(self, *args: Any, consumed: Any = None, **kwargs: Any):
        super().__init__(*args, **kwargs)
        # Lightning prefetches one batch ahead, so "served" over-counts; the trainer's own count of completed
        # batches is what was trained on. ``consumed`` returns it (None outside a trainer).
        self._consumed = consumed

    def state_dict(self) -> dict[str, int]:
        sampler: ResumableBatchSampler = self.batch_sampler
        consumed = self._consumed() if self._consumed is not None else None
        return {"epoch": sampler.epoch, "batches": sampler.served if consumed is None else consumed}

    def load_state_dict(self, state: dict[str, int]) -> None:
        sampler: ResumableBatchSampler = self.batch_sampler
        sampler.epoch = state["epoch"]
        sampler._skip = state["batches"]
