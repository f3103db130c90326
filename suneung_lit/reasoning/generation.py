"""Batched chain-of-thought generation with answer extraction and an option-scoring fallback.

Rows are generated greedily from left-padded prompts with the key/value cache, stopping at EOS or, per row, once
the text (after the template's assistant prefix) closes a JSON object. Each text goes through
``extract_answer``; a row whose text gives no usable answer is scored the usual way at an answer position
appended after its text (``FALLBACK_CUE``), so no item is ever left without an answer.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from suneung_lit.data.batching import left_pad
from suneung_lit.reasoning.extraction import after_thinking, extract_answer, json_objects
from suneung_lit.scoring import answer_logits, option_scores

# Appended after a text that gave no parsable answer: the next token is then the answer digit.
FALLBACK_CUE = "\n정답: "


@dataclass(frozen=True)
class Generated:
    text: str  # the assistant prefix plus the generated text
    answer: int  # 1-based
    path: str  # which extraction step found it (see extraction.PATHS)
    probabilities: list[float]  # one-hot for a parsed answer; scored option probabilities for the fallback


def _closes_json(text: str) -> bool:
    # Braces inside a thinking block are not the answer: only what follows it can end the generation.
    return bool(json_objects(after_thinking(text)))


class StopAtJson:
    """Generation stopping criterion: a row is done once its prefix + text closes a JSON object."""

    def __init__(self, tokenizer, prompt_length: int, prefix: str):
        self.tokenizer, self.prompt_length, self.prefix = tokenizer, prompt_length, prefix

    def __call__(self, input_ids: Tensor, scores: Tensor, **kwargs) -> Tensor:
        texts = self.tokenizer.batch_decode(input_ids[:, self.prompt_length :], skip_special_tokens=True)
        return torch.tensor([_closes_json(self.prefix + t) for t in texts], device=input_ids.device)


def generate_answers(
    model: torch.nn.Module,
    tokenizer,
    input_ids: Tensor,
    attention_mask: Tensor,
    num_choices: Tensor,
    option_ids: list[int],
    assistant_prefix: str = "",
    max_new_tokens: int = 256,
) -> list[Generated]:
    """Generate, extract and (where needed) score the options, for one left-padded batch."""
    from transformers import StoppingCriteriaList

    prompt_length = input_ids.shape[1]
    stop = StoppingCriteriaList([StopAtJson(tokenizer, prompt_length, assistant_prefix)])
    output = model.generate(
        input_ids=input_ids,
        attention_mask=attention_mask,
        max_new_tokens=max_new_tokens,
        do_sample=False,
        stopping_criteria=stop,
        pad_token_id=tokenizer.pad_token_id,
        use_cache=True,
    )
    continuations = output[:, prompt_length:]
    texts = [assistant_prefix + t for t in tokenizer.batch_decode(continuations, skip_special_tokens=True)]
    extracted = [extract_answer(text, int(n)) for text, n in zip(texts, num_choices, strict=True)]
    fallback_rows = [i for i, e in enumerate(extracted) if e.answer is None]
    scored = _score_after_text(
        model, tokenizer, input_ids, attention_mask, continuations, num_choices, option_ids, fallback_rows
    )
    results = []
    for row, (text, found) in enumerate(zip(texts, extracted, strict=True)):
        width = len(option_ids)
        if found.answer is not None:
            probabilities = [1.0 if k == found.answer - 1 else 0.0 for k in range(width)]
            results.append(Generated(text, found.answer, found.path, probabilities))
        else:
            probabilities = scored[row]
            results.append(Generated(text, int(torch.tensor(probabilities).argmax()) + 1, "fallback", probabilities))
    return results


def _score_after_text(
    model, tokenizer, input_ids, attention_mask, continuations, num_choices, option_ids, rows: list[int]
) -> dict[int, list[float]]:
    """Option probabilities at an answer position after each row's prompt + generated text + ``FALLBACK_CUE``."""
    if not rows:
        return {}
    cue = tokenizer.encode(FALLBACK_CUE, add_special_tokens=False)
    special = set(tokenizer.all_special_ids)
    sequences = []
    for row in rows:
        prompt = input_ids[row, attention_mask[row].bool()].tolist()
        text = [t for t in continuations[row].tolist() if t not in special]
        sequences.append(prompt + text + cue)
    ids, mask = left_pad(sequences, tokenizer.pad_token_id, input_ids.device)
    logits = answer_logits(model, ids, mask)
    scores = option_scores(logits, option_ids, num_choices[rows]).softmax(-1)
    return {row: scores[i].tolist() for i, row in enumerate(rows)}
