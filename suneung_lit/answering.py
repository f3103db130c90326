"""Answering a batch: one record per item, read from the answer-position logits or from a generated text.

Validation, test and predict all call an answerer and get the same ``ItemAnswers`` back, whichever way the
answers were found:

- ``ScoredAnswers``: the option logits at the answer position, debiased as configured (``suneung_lit.debias``);
  shifted copies of an item come back as one row in the original choice order.
- ``GeneratedAnswers``: a chain of thought written greedily, the answer extracted from it
  (``suneung_lit.reasoning``).
"""

from __future__ import annotations

import time
from collections import Counter
from dataclasses import dataclass
from typing import Any, Literal, Protocol

import torch
from torch import Tensor

from suneung_lit.data.shifting import DebiasChoice
from suneung_lit.debias import PositionOffsets, PositionPrior, debiased, masked_log_softmax
from suneung_lit.prefix_reuse import PrefixLayout
from suneung_lit.reasoning.generation import generate_answers
from suneung_lit.scoring import batch_option_scores, prompt_tokens


@dataclass
class ItemAnswers:
    """Per-item outcome of one batch; positions are 0-based and in the item's original choice order."""

    log_probs: Tensor  # [items, max_choices]
    prediction: Tensor  # [items]
    answer: Tensor  # [items], -1 where the input has no answer
    num_choices: Tensor
    group: Tensor  # data source index, -1 when unknown
    index: Tensor  # the item's position in its input file
    id: list[str]
    score: Tensor | None = None  # [items] exam points of each item, 0 where it has none
    row_logits: Tensor | None = None  # scoring only: answer-position logits of every scored row (copy)
    row_scores: Tensor | None = None  # scoring only: option scores of every scored row
    text: list[str] | None = None  # generation only: the generated texts
    path: list[str] | None = None  # generation only: which extraction step found each answer

    def prediction_record(self) -> dict[str, Any]:
        """What the prediction writer receives: 1-based positions (answer 0 where there is none), on the CPU."""
        record = {
            "index": self.index.cpu(),
            "id": self.id,
            "probabilities": self.log_probs.exp().cpu(),
            "prediction": self.prediction.cpu() + 1,
            "answer": self.answer.cpu() + 1,
            "num_choices": self.num_choices.cpu(),
        }
        if self.text is not None:
            record.update(text=self.text, path=self.path)
        return record


Stage = Literal["sanity", "val", "test", "predict"]


class Answerer(Protocol):
    def start(self, stage: Stage) -> None:
        """Before an epoch's first batch: reset per-epoch state, check that the stage can run."""

    def __call__(self, model: torch.nn.Module, batch: dict[str, Any]) -> ItemAnswers: ...

    def finish(self) -> tuple[list[str], dict[str, float]]:
        """After an epoch: what answering cost or how it went, as lines to print and metrics to log."""


def build_answerer(
    answer_mode: Literal["logits", "generate"],
    option_ids: list[int],
    debias: DebiasChoice,
    offsets: PositionOffsets,
    tokenizer,
    assistant_prefix: str,
    max_new_tokens: int,
    prefix_layout: PrefixLayout = "cached",
) -> Answerer:
    """The answerer ``model.answer_mode`` asks for; generation is never debiased (its answers are not scores)."""
    if answer_mode == "generate":
        if debias != "none":
            raise ValueError("model.answer_mode generate and model.debias are not combined; set debias: none")
        return GeneratedAnswers(tokenizer, option_ids, assistant_prefix, max_new_tokens)
    return ScoredAnswers(option_ids, debias, offsets, prefix_layout)


class EvaluationCost:
    """Scored copies and prompt tokens per item, and items/s, of one evaluation epoch."""

    def __init__(self) -> None:
        self.items = 0
        self.copies = 0
        self.tokens = 0  # prompt tokens computed
        self.plain_tokens = 0  # prompt tokens without prefix sharing
        self.started = time.perf_counter()

    def add(self, items: int, copies: int, tokens: int = 0, plain_tokens: int = 0) -> None:
        self.items += items
        self.copies += copies
        self.tokens += tokens
        self.plain_tokens += plain_tokens

    def __str__(self) -> str:
        seconds = time.perf_counter() - self.started
        items = max(self.items, 1)
        return (
            f"{self.copies / items:.2f} scored copies per item, {self.tokens / items:.0f} prompt tokens computed "
            f"per item ({self.plain_tokens / items:.0f} without prefix sharing), {self.items} items in "
            f"{seconds:.1f} s ({self.items / max(seconds, 1e-9):.2f} items/s)"
        )


class ScoredAnswers:
    """Answers read from the option-token logits at the answer position, debiased by ``debias``."""

    def __init__(
        self,
        option_ids: list[int],
        debias: DebiasChoice,
        offsets: PositionOffsets,
        prefix_layout: PrefixLayout = "cached",
    ) -> None:
        self.option_ids, self.debias, self.offsets, self.prefix_layout = option_ids, debias, offsets, prefix_layout
        self.start("sanity")

    def start(self, stage: Stage) -> None:
        if stage in ("test", "predict") and self.debias == "offsets" and not self.offsets:
            raise ValueError(
                f"model.debias offsets: {stage} needs a checkpoint (--ckpt_path) from a fit run with model.debias "
                "offsets, whose validation fitted the position offsets"
            )
        self.prior = PositionPrior()
        self.cost = EvaluationCost()
        # Validation (not Lightning's sanity check) refits the offsets from its undebiased scores.
        self.collecting = stage == "val" and self.debias == "offsets"
        if self.collecting:
            self.offsets.start_collecting()

    def __call__(self, model: torch.nn.Module, batch: dict[str, Any]) -> ItemAnswers:
        logits, scores = batch_option_scores(model, batch, self.option_ids, self.prefix_layout)
        n = batch["num_choices"]
        log_probs, first = debiased(
            masked_log_softmax(scores, n), batch["item_index"], batch["shift"], n, self.debias, self.prior, self.offsets
        )
        n, shift, answer = n[first], batch["shift"][first], batch["answer"][first]
        # A shifted copy's answer moved with its text; map it back to the original position.
        answer = torch.where(answer >= 0, (answer - shift) % n, answer)
        self.cost.add(len(first), len(batch["id"]), *prompt_tokens(batch))
        if self.collecting:
            self.offsets.collect(log_probs, answer, n)
        return ItemAnswers(
            log_probs=log_probs,
            prediction=log_probs.argmax(-1),
            answer=answer,
            num_choices=n,
            group=batch["group"][first],
            index=batch["item_index"][first],
            id=[batch["id"][i] for i in first.tolist()],
            score=batch["score"][first] if "score" in batch else None,
            row_logits=logits,
            row_scores=scores,
        )

    def finish(self) -> tuple[list[str], dict[str, float]]:
        lines, metrics = [], {}
        fitted = self.offsets.fit() if self.collecting else None
        if fitted is not None:
            lines.append(f"fitted position offsets on {fitted[0]} validation items: {self.offsets}")
            metrics["acc_offsets_in_sample"] = fitted[1]
        if self.debias != "none" and self.cost.items:
            lines.append(f"debias={self.debias}: {self.cost}")
            lines += [f"  {self.prior}"] if self.debias == "pride" else []
        return lines, metrics


class GeneratedAnswers:
    """Answers extracted from a greedily generated chain of thought, with option scoring as the fallback."""

    def __init__(self, tokenizer, option_ids: list[int], assistant_prefix: str, max_new_tokens: int) -> None:
        self.tokenizer, self.option_ids = tokenizer, option_ids
        self.assistant_prefix, self.max_new_tokens = assistant_prefix, max_new_tokens
        self.start("sanity")

    def start(self, stage: Stage) -> None:
        self.paths: Counter = Counter()

    def __call__(self, model: torch.nn.Module, batch: dict[str, Any]) -> ItemAnswers:
        generated = generate_answers(
            model,
            self.tokenizer,
            batch["input_ids"],
            batch["attention_mask"],
            batch["num_choices"],
            self.option_ids,
            self.assistant_prefix,
            self.max_new_tokens,
        )
        self.paths.update(g.path for g in generated)
        probabilities = torch.tensor([g.probabilities for g in generated], device=batch["input_ids"].device)
        return ItemAnswers(
            log_probs=probabilities.clamp_min(1e-12).log(),
            prediction=torch.tensor([g.answer - 1 for g in generated], device=probabilities.device),
            answer=batch["answer"],
            num_choices=batch["num_choices"],
            group=batch["group"],
            index=batch["item_index"],
            id=list(batch["id"]),
            score=batch.get("score"),
            text=[g.text for g in generated],
            path=[g.path for g in generated],
        )

    def finish(self) -> tuple[list[str], dict[str, float]]:
        total = sum(self.paths.values())
        if not total:
            return [], {}
        shares = {f"extraction/{path}": count / total for path, count in self.paths.items()}
        return [f"answers extracted from {total} generated texts: {dict(self.paths)}"], shares
