"""A loaded causal LM as the writer and the judge of generated items: greedy (or sampled) writing that stops once a
JSON object closes, a YES/NO verdict read from the two tokens' logits, and the item scored under every cyclic shift
of its choices, with and without its passage."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace

import torch

from suneung_lit.data.batching import left_pad
from suneung_lit.data.prompts import load_template, render_prompt
from suneung_lit.data.records import Item
from suneung_lit.data.shifting import cyclic_shift
from suneung_lit.data.tokenization import option_token_ids
from suneung_lit.reasoning.generation import StopAtJson
from suneung_lit.scoring import answer_logits, option_scores


class LanguageModel:
    """One model with its tokenizer, used in batches of ``batch_size`` rows."""

    def __init__(self, model: torch.nn.Module, tokenizer, batch_size: int = 4, max_choices: int = 5):
        self.model, self.tokenizer, self.batch_size = model.eval(), tokenizer, batch_size
        self.template = load_template("base")
        self.option_ids = option_token_ids(tokenizer, max_choices)
        self.device = next(model.parameters()).device

    def chat(self, text: str) -> str:
        """``text`` as one user turn, up to where the assistant answers (plain text for a model without a chat
        template)."""
        if getattr(self.tokenizer, "chat_template", None):
            messages = [{"role": "user", "content": text}]
            return self.tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
        return text + "\n"

    def _encoded(self, prompts: Sequence[str]) -> tuple[torch.Tensor, torch.Tensor]:
        ids = self.tokenizer(list(prompts), add_special_tokens=False)["input_ids"]
        return left_pad(ids, self.tokenizer.pad_token_id, self.device)

    @torch.no_grad()
    def write(self, prompts: Sequence[str], max_new_tokens: int, temperature: float = 0.0) -> list[str]:
        """The text each prompt's chat turn continues into, stopping at EOS or once a JSON object closes."""
        from transformers import StoppingCriteriaList

        texts = []
        for start in range(0, len(prompts), self.batch_size):
            ids, mask = self._encoded([self.chat(p) for p in prompts[start : start + self.batch_size]])
            sampling = {"do_sample": True, "temperature": temperature} if temperature > 0 else {"do_sample": False}
            stop = StoppingCriteriaList([StopAtJson(self.tokenizer, ids.shape[1], "")])
            pad = self.tokenizer.pad_token_id
            output = self.model.generate(input_ids=ids, attention_mask=mask, max_new_tokens=max_new_tokens,
                                         pad_token_id=pad, stopping_criteria=stop, **sampling)  # fmt: skip
            texts += self.tokenizer.batch_decode(output[:, ids.shape[1] :], skip_special_tokens=True)
        return texts

    @torch.no_grad()
    def yes_probability(self, prompts: Sequence[str]) -> list[float]:
        """P(YES) against NO at the start of the answer to each prompt: the two tokens' logits, softmaxed."""
        yes, no = (self.tokenizer.encode(word, add_special_tokens=False)[0] for word in ("YES", "NO"))
        found = []
        for start in range(0, len(prompts), self.batch_size):
            ids, mask = self._encoded([self.chat(p) for p in prompts[start : start + self.batch_size]])
            logits = answer_logits(self.model, ids, mask)[:, [yes, no]].float()
            found += logits.softmax(-1)[:, 0].tolist()
        return found

    @torch.no_grad()
    def answers(self, items: Sequence[Item]) -> list[int]:
        """The option each item's prompt (the package's ``base`` template) scores highest, 1-based."""
        found = []
        for start in range(0, len(items), self.batch_size):
            batch = items[start : start + self.batch_size]
            ids, mask = self._encoded([render_prompt(item, self.template, self.tokenizer) for item in batch])
            counts = torch.tensor([item.num_choices for item in batch], device=self.device)
            found += (
                option_scores(answer_logits(self.model, ids, mask), self.option_ids, counts).argmax(-1) + 1
            ).tolist()
        return found

    def correct_under_shifts(self, items: Sequence[Item], blind: bool = False) -> list[int]:
        """For each item, under how many of its ``n`` cyclic shifts the keyed answer is picked; ``blind`` scores
        the items with their passage removed."""
        copies = [cyclic_shift(replace(item, paragraph="") if blind else item, shift)
                  for item in items for shift in range(item.num_choices)]  # fmt: skip
        picked = self.answers(copies)
        counts, start = [], 0
        for item in items:
            rows = range(start, start + item.num_choices)
            counts.append(sum(picked[row] == copies[row].answer for row in rows))
            start += item.num_choices
        return counts
