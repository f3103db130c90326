"""The language-model stage's data: a corpus tokenized into packed blocks (or one row per passage chunk), a
held-out share of passages for validation loss, and resumable batches like the multiple-choice stage's."""

from __future__ import annotations

import random
from collections.abc import Sequence
from typing import Any

import lightning as L
import torch
from lightning.pytorch.utilities import rank_zero_info
from torch.utils.data import DataLoader

from suneung_lit import sharding
from suneung_lit.data.batching import ResumableBatchSampler, ResumableDataLoader
from suneung_lit.pretraining.corpus import Corpus, Passage, build_corpus


def pack_blocks(passages: Sequence[Sequence[int]], block_size: int) -> list[list[int]]:
    """Passages (each ending in EOS) laid end to end and cut every ``block_size`` tokens: no padding and no token
    lost (the last block may be shorter). Attention crosses passage boundaries, as in most pretraining; the EOS
    between passages tells the model where one ends."""
    stream = [token for passage in passages for token in passage]
    return [stream[start : start + block_size] for start in range(0, len(stream), block_size)]


def chunk_passages(passages: Sequence[Sequence[int]], block_size: int) -> list[list[int]]:
    """Each passage its own rows, cut into pieces of at most ``block_size`` tokens (nothing is truncated away)."""
    return [list(p[start : start + block_size]) for p in passages for start in range(0, len(p), block_size)]


def split_passages(passages: Sequence[Passage], val_fraction: float, seed: int) -> tuple[list[Passage], list[Passage]]:
    """A seeded share of passages held out for validation loss (at least one when the fraction is positive)."""
    if val_fraction <= 0:
        return list(passages), []
    order = list(range(len(passages)))
    random.Random(seed).shuffle(order)
    count = max(1, round(len(passages) * val_fraction))
    if count >= len(passages):
        raise ValueError(f"data.val_fraction {val_fraction} leaves no training passage out of {len(passages)}")
    held = set(order[:count])
    return [p for i, p in enumerate(passages) if i not in held], [p for i, p in enumerate(passages) if i in held]


class RightPadCollator:
    """Pads rows on the right; padding is masked out of attention and of the loss (label -100)."""

    def __init__(self, pad_token_id: int):
        self.pad_token_id = pad_token_id

    def __call__(self, rows: list[dict[str, Any]]) -> dict[str, torch.Tensor]:
        width = max(len(row["input_ids"]) for row in rows)
        ids = torch.full((len(rows), width), self.pad_token_id, dtype=torch.long)
        mask = torch.zeros((len(rows), width), dtype=torch.long)
        for i, row in enumerate(rows):
            ids[i, : len(row["input_ids"])] = torch.tensor(row["input_ids"])
            mask[i, : len(row["input_ids"])] = 1
        return {"input_ids": ids, "attention_mask": mask, "labels": ids.masked_fill(mask == 0, -100)}


class _Rows(torch.utils.data.Dataset):
    def __init__(self, rows: list[list[int]]):
        self.rows = rows

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, index: int) -> dict[str, Any]:
        return {"input_ids": self.rows[index]}


class TextCorpusDataModule(L.LightningDataModule):
    """A text corpus for continued pretraining (causal-LM loss on every token) before the multiple-choice fine-tune.

    Args:
        tokenizer_name_or_path: the base model's tokenizer (linked from ``model.model_name_or_path``).
        corpus_paths: ``.jsonl``/``.csv`` files with a text field, ``.txt`` files or folders of them.
        items_paths: multiple-choice files (competition or flat shape) whose paragraphs join the corpus, e.g. the
            train file, and the test file's passages (no answers are read).
        exclude_paths: multiple-choice files whose paragraphs are left out (the items a later fine-tune validates
            on: pretraining on them would leak their passages into that validation).
        text_field: the field or column of ``corpus_paths`` that holds the text.
        block_size: tokens per training row.
        packing: lay passages end to end (EOS between them) and cut into full blocks (no padding); false: each
            passage its own rows (long ones cut into blocks), batched by length.
        val_fraction: share of passages held out for ``val/loss`` (0: no validation).
        train_batch_size: rows per training batch.
        eval_batch_size: rows per validation batch.
        seed: the validation draw and the batch order.
        trust_remote_code: passed to the tokenizer (linked from ``model.base.trust_remote_code``).
        num_workers: DataLoader worker processes.
    """

    def __init__(
        self,
        tokenizer_name_or_path: str,
        corpus_paths: list[str] | None = None,
        items_paths: list[str] | None = None,
        exclude_paths: list[str] | None = None,
        text_field: str = "text",
        block_size: int = 1024,
        packing: bool = True,
        val_fraction: float = 0.05,
        train_batch_size: int = 4,
        eval_batch_size: int = 8,
        seed: int = 42,
        trust_remote_code: bool = False,
        num_workers: int = 0,
    ):
        super().__init__()
        if block_size < 2:
            raise ValueError(f"data.block_size must be at least 2, got {block_size}")
        self.save_hyperparameters()
        self.corpus: Corpus | None = None
        self.rows: dict[str, list[list[int]]] = {}
        self.tokenizer = None

    def read_corpus(self) -> Corpus:
        """The checked corpus (raises ``CorpusError`` naming file and line); Lightning runs this in ``setup``,
        before ``configure_model`` loads the model."""
        hp = self.hparams
        if self.corpus is None:
            self.corpus = build_corpus(hp.corpus_paths or [], hp.items_paths or [], hp.exclude_paths or [],
                                       hp.text_field)  # fmt: skip
        return self.corpus

    def setup(self, stage: str) -> None:
        if self.rows:
            return
        hp = self.hparams
        corpus = self.read_corpus()
        rank_zero_info(corpus.summary())
        from transformers import AutoTokenizer

        self.tokenizer = AutoTokenizer.from_pretrained(
            hp.tokenizer_name_or_path, trust_remote_code=hp.trust_remote_code
        )
        eos = self.tokenizer.eos_token_id
        if eos is None:
            raise ValueError(f"{hp.tokenizer_name_or_path}: the tokenizer has no EOS token to end passages with")
        train, val = split_passages(corpus.passages, hp.val_fraction, hp.seed)
        lay_out = pack_blocks if hp.packing else chunk_passages
        for split, passages in (("train", train), ("val", val)):
            tokens = [self.tokenizer(p.text, add_special_tokens=False)["input_ids"] + [eos] for p in passages]
            self.rows[split] = lay_out(tokens, hp.block_size)
            rank_zero_info(f"pretrain {split}: {len(passages)} passages, {sum(map(len, tokens))} tokens in "
                           f"{len(self.rows[split])} rows of at most {hp.block_size}")  # fmt: skip

    def _pad_id(self) -> int:
        pad = self.tokenizer.pad_token_id
        return pad if pad is not None else self.tokenizer.eos_token_id

    def _rank(self) -> tuple[int, int]:
        trainer = self.trainer
        return (trainer.global_rank, trainer.world_size) if trainer is not None else (0, 1)

    def train_dataloader(self) -> DataLoader:
        rows = self.rows["train"]
        rank, world_size = self._rank()
        sampler = ResumableBatchSampler(
            [len(r) for r in rows], self.hparams.train_batch_size, seed=self.hparams.seed, shuffle=True,
            group_by_length=not self.hparams.packing, rank=rank, world_size=world_size,
        )  # fmt: skip
        trainer = self.trainer

        def consumed() -> int | None:
            return None if trainer is None else trainer.fit_loop.epoch_loop.batch_progress.current.processed

        return ResumableDataLoader(_Rows(rows), batch_sampler=sampler, collate_fn=RightPadCollator(self._pad_id()),
                                   num_workers=self.hparams.num_workers, consumed=consumed)  # fmt: skip

    def val_dataloader(self) -> DataLoader | list:
        rows = self.rows.get("val") or []
        if not rows:
            return []
        rank, world_size = self._rank()
        sampler = ResumableBatchSampler([len(r) for r in rows], self.hparams.eval_batch_size, shuffle=False,
                                        rank=rank, world_size=world_size,
                                        even_batches=sharding.is_sharded(self.trainer))  # fmt: skip
        return DataLoader(_Rows(rows), batch_sampler=sampler, collate_fn=RightPadCollator(self._pad_id()),
                          num_workers=self.hparams.num_workers)  # fmt: skip
