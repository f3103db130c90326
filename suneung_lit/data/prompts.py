"""Prompt templates: plain text files, rendered through the tokenizer's chat template.

Base models often ship a tokenizer without a chat template (Gemma 3 270M's has none). Their prompts are plain
text: the BOS token, the system and user texts separated by blank lines, and one space after the user text's
closing cue ("정답:") so that the next token is the answer digit itself.

A template is a folder holding ``user.txt`` (items without <보기>), ``user_plus.txt`` (items with it), and
optionally ``system.txt``, ``assistant_prefix.txt`` (the start of the assistant turn: the answer digit follows it,
and generation continues from it) and ``answer_slot.txt`` (when scoring or training on the answer digit, the
assistant turn up to the digit, in place of the prefix; ``$reasoning_json`` is the item's ``reasoning`` column as a
JSON string, empty when the item has none: this is how rationale training puts the reasoning before the answer).
Placeholders use ``$name``: ``paragraph``, ``question``,
``question_plus``, ``choices`` (numbered lines), ``num_choices``, ``option_list`` ("1, 2, 3, 4") and any
metadata column (``support``). Bundled templates live in ``suneung_lit/data/templates/``; a path to a folder
of the same layout works too.
"""

from __future__ import annotations

import json
import string
from collections.abc import Sequence
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

from suneung_lit.data.few_shot import examples_of
from suneung_lit.data.records import DataValidationError, Item, Problem

TEMPLATES_DIR = Path(__file__).parent / "templates"
# Jinja, rendered by transformers' apply_chat_template like any chat template (so one code path serves both).
PLAIN_TEXT_CHAT_TEMPLATE = (
    "{%- if bos_token %}{{- bos_token }}{%- endif %}"
    "{%- for message in messages %}{{- message['content'] }}{%- if not loop.last %}{{- '\\n\\n' }}{%- endif %}"
    "{%- endfor %}"
    "{%- if add_generation_prompt %}{{- ' ' }}{%- endif %}"
)
ITEM_FIELDS = {"paragraph", "question", "question_plus", "choices", "num_choices", "option_list"}


def available_templates() -> list[str]:
    return sorted(p.name for p in TEMPLATES_DIR.iterdir() if (p / "user.txt").is_file())


@dataclass(frozen=True)
class PromptTemplate:
    name: str
    user: str
    user_plus: str
    system: str | None = None
    assistant_prefix: str = ""
    answer_slot: str | None = None
    # Passed to the chat template as ``enable_thinking`` (Qwen3's switch) unless None: ``data.enable_thinking``.
    enable_thinking: bool | None = None

    def assistant_text(self, item: Item, for_generation: bool = False) -> str:
        """What follows the chat generation prompt: up to the answer digit, or where generation starts."""
        if for_generation or self.answer_slot is None:
            return self.assistant_prefix
        reasoning = json.dumps(item.metadata.get("reasoning", "").strip(), ensure_ascii=False)
        return string.Template(self.answer_slot).substitute(reasoning_json=reasoning)

    @cached_property
    def metadata_fields(self) -> set[str]:
        """Placeholders that must come from metadata columns (e.g. ``support``)."""
        names = set()
        for text in (self.user, self.user_plus, self.system or ""):
            for match in string.Template.pattern.finditer(text):
                name = match.group("named") or match.group("braced")
                if name:
                    names.add(name)
        return names - ITEM_FIELDS

    def messages(self, item: Item) -> list[dict[str, str]]:
        """The chat turns for an item, without the answer: the system turn, each few-shot example as a user turn
        and an assistant turn holding its answer digit (``data.few_shot``), then the item's own user turn."""
        turns = []
        if self.system:
            turns.append({"role": "system", "content": string.Template(self.system).substitute(self._values(item))})
        for example in examples_of(item):
            turns.append({"role": "user", "content": self._user_text(example)})
            turns.append({"role": "assistant", "content": f"{self.assistant_prefix}{example.answer}"})
        turns.append({"role": "user", "content": self._user_text(item)})
        return turns

    def _user_text(self, item: Item) -> str:
        body = self.user_plus if item.question_plus.strip() else self.user
        return string.Template(body).substitute(self._values(item))

    def _values(self, item: Item) -> dict[str, str]:
        return {
            **item.metadata,
            "paragraph": item.paragraph,
            "question": item.question,
            "question_plus": item.question_plus,
            "choices": "\n".join(f"{n} - {text}" for n, text in enumerate(item.choices, start=1)),
            "num_choices": str(item.num_choices),
            "option_list": ", ".join(str(n) for n in range(1, item.num_choices + 1)),
        }

    def check_items(self, items: Sequence[Item], source: str) -> None:
        """Fail before tokenizing when a template needs a metadata column that items lack."""
        problems = [
            Problem(source, None, item.id, name, f"template {self.name!r} needs a non-empty {name!r} column")
            for item in items
            for name in sorted(self.metadata_fields)
            if not item.metadata.get(name, "").strip()
        ]
        if problems:
            raise DataValidationError(problems[:50], len(problems))


def load_template(name_or_path: str) -> PromptTemplate:
    """A bundled template by name, or a template folder by path."""
    folder = Path(name_or_path)
    if not (folder / "user.txt").is_file():
        folder = TEMPLATES_DIR / name_or_path
    if not (folder / "user.txt").is_file():
        raise ValueError(
            f"unknown prompt template {name_or_path!r}: choose one of {available_templates()} "
            "or give a folder holding user.txt and user_plus.txt"
        )

    def read(name: str) -> str | None:
        path = folder / name
        return path.read_text(encoding="utf-8").strip() if path.is_file() else None

    user = read("user.txt") or ""
    prefix_path = folder / "assistant_prefix.txt"
    slot_path = folder / "answer_slot.txt"
    return PromptTemplate(
        name=folder.name,
        user=user,
        user_plus=read("user_plus.txt") or user,
        system=read("system.txt"),
        # The prefix is kept verbatim: a trailing space decides how the answer digit is tokenized.
        assistant_prefix=prefix_path.read_text(encoding="utf-8") if prefix_path.is_file() else "",
        answer_slot=slot_path.read_text(encoding="utf-8") if slot_path.is_file() else None,
    )


def chat_template_of(tokenizer) -> str:
    """The tokenizer's own chat template, or the plain-text layout when it has none."""
    return getattr(tokenizer, "chat_template", None) or PLAIN_TEXT_CHAT_TEMPLATE


def resolve_chat_template(setting: str | None, tokenizer) -> str:
    """What ``data.chat_template`` means: null (the tokenizer's, else plain text), ``plain``, or a Jinja file."""
    if setting is None:
        return chat_template_of(tokenizer)
    if setting == "plain":
        return PLAIN_TEXT_CHAT_TEMPLATE
    path = Path(setting)
    if not path.is_file():
        raise ValueError(f"data.chat_template: {setting!r} is neither 'plain' nor a Jinja template file")
    return path.read_text(encoding="utf-8")


def render_chat(item: Item, template: PromptTemplate, tokenizer) -> str:
    """The chat turns rendered up to the start of the assistant turn (the generation prompt)."""
    switches = {} if template.enable_thinking is None else {"enable_thinking": template.enable_thinking}
    return tokenizer.apply_chat_template(
        template.messages(item),
        chat_template=chat_template_of(tokenizer),
        tokenize=False,
        add_generation_prompt=True,
        **switches,
    )


def render_prompt(item: Item, template: PromptTemplate, tokenizer, for_generation: bool = False) -> str:
    """The full prompt text up to the answer position (or, ``for_generation``, up to where generation starts)."""
    return render_chat(item, template, tokenizer) + template.assistant_text(item, for_generation)


def prompt_token_counts(items: Sequence[Item], tokenizer, template_name: str = "base") -> list[int]:
    """Each item's full prompt length in tokens, as the data module encodes it (chat format, no extra specials)."""
    template = load_template(template_name)
    prompts = [render_prompt(item, template, tokenizer) for item in items]
    return [len(ids) for ids in tokenizer(prompts, add_special_tokens=False)["input_ids"]]
