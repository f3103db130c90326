"""Items -> token ids, with the answer-only training target and a length policy that never drops an item.

Each encoded row holds the prompt up to the answer position (``input_ids``), the answer's token id (``label``,
-100 when unknown) and 0-based choice index (``answer``, -1 when unknown). The loss is the cross-entropy of
the one answer token after the prompt: the same as causal-LM loss on ``prompt + answer`` with every label but
the answer set to -100, without building that mask. Over-length items get their paragraph shortened; question,
<보기> and choices stay whole.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import weakref
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path

import datasets

from suneung_lit.data.few_shot import without_last_example
from suneung_lit.data.prompts import PromptTemplate, render_chat, render_prompt
from suneung_lit.data.records import DataValidationError, Item, Problem
from suneung_lit.exam import score_or_zero

IGNORE_INDEX = -100
ENCODING_VERSION = "3"  # bump when the encoding logic changes, so stale caches are not reused
SHORTENED_MARKER = " …"
# Rows per process below which a process pool costs more than it saves.
MIN_ROWS_PER_PROCESS = 5000
METADATA_GROUP_COLUMNS = ("source", "category")


def option_token_ids(tokenizer, num_options: int) -> list[int]:
    """Token ids of "1".."num_options" as the model emits them right after the prompt."""
    ids = []
    for number in range(1, num_options + 1):
        encoded = tokenizer.encode(str(number), add_special_tokens=False)
        if len(encoded) != 1:
            raise ValueError(
                f"tokenizer {getattr(tokenizer, 'name_or_path', '')!r} splits option {number} into "
                f"{len(encoded)} tokens; option numbers must be single tokens"
            )
        ids.append(encoded[0])
    if len(set(ids)) != len(ids):
        raise ValueError(f"option numbers share token ids: {ids}")
    return ids


@dataclass(frozen=True)
class EncodingStats:
    rows: int
    shortened_ids: tuple[str, ...]
    prompt_lengths: tuple[int, ...]  # before shortening, in tokens


def group_of(item: Item) -> str:
    """The per-source accuracy group: a ``source`` or ``category`` metadata column, when present."""
    for column in METADATA_GROUP_COLUMNS:
        value = item.metadata.get(column, "").strip()
        if value:
            return value
    return ""


def fitted_prompt(item: Item, template: PromptTemplate, tokenizer, max_length: int) -> str:
    """The prompt text the data module scores for ``item`` (up to the answer digit), shortened to fit
    ``max_length`` tokens as it would be."""
    text = render_prompt(item, template, tokenizer)
    ids = tokenizer.encode(text, add_special_tokens=False)
    return text if len(ids) <= max_length else _shorten(item, ids, template, tokenizer, max_length)[1]


def _shorten(
    item: Item, ids: list[int], template: PromptTemplate, tokenizer, max_length: int, for_generation: bool = False
) -> tuple[list[int], str]:
    """Prompt ids (and their text) that fit ``max_length``: few-shot examples are dropped first (the last, least
    similar, first), then the paragraph is cut from its end; question and choices stay whole."""
    fewer = without_last_example(item)
    while fewer is not None:
        item = fewer
        text = render_prompt(item, template, tokenizer, for_generation)
        ids = tokenizer.encode(text, add_special_tokens=False)
        if len(ids) <= max_length:
            return ids, text
        fewer = without_last_example(item)
    paragraph_ids = tokenizer.encode(item.paragraph, add_special_tokens=False)
    keep = len(paragraph_ids) - (len(ids) - max_length)
    while keep > 0:
        shorter = replace(item, paragraph=tokenizer.decode(paragraph_ids[:keep]) + SHORTENED_MARKER)
        text = render_prompt(shorter, template, tokenizer, for_generation)
        ids = tokenizer.encode(text, add_special_tokens=False)
        if len(ids) <= max_length:
            return ids, text
        # Token boundaries can shift after decoding; step down by the remaining overflow plus a margin.
        keep -= len(ids) - max_length + 4
    text = render_prompt(replace(item, paragraph=""), template, tokenizer, for_generation)
    ids = tokenizer.encode(text, add_special_tokens=False)
    if len(ids) <= max_length:
        return ids, text
    raise DataValidationError(
        [
            Problem(
                "<tokenization>",
                None,
                item.id,
                "question/question_plus/choices",
                f"needs {len(ids)} tokens even with an empty paragraph; max_length is {max_length}",
            )
        ]
    )


_TOKENIZER_DIGESTS: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def _tokenizer_digest(tokenizer) -> bytes:
    """Hash of the tokenizer's vocabulary, merges and chat template, computed once per tokenizer object.

    Serialising a 151k-token vocabulary takes ~0.2 s; a data module encodes several splits with one tokenizer.
    """
    digest = _TOKENIZER_DIGESTS.get(tokenizer)
    if digest is None:
        serialized = tokenizer.backend_tokenizer.to_str() + "\x00" + str(tokenizer.chat_template)
        digest = _TOKENIZER_DIGESTS[tokenizer] = hashlib.sha256(serialized.encode()).digest()
    return digest


def _fingerprint(
    items: Sequence[Item], template: PromptTemplate, tokenizer, max_length: int, for_generation: bool
) -> str:
    digest = hashlib.sha256()
    digest.update(f"{ENCODING_VERSION}|{max_length}|{for_generation}|{template!r}".encode())
    digest.update(_tokenizer_digest(tokenizer))
    for item in items:
        record = [item.id, item.paragraph, item.question, item.choices, item.answer, item.question_plus]
        digest.update(json.dumps([record, sorted(item.metadata.items())], ensure_ascii=False).encode())
    return digest.hexdigest()[:32]


def default_cache_dir() -> Path:
    root = os.environ.get("SUNEUNG_LIT_CACHE") or Path.home() / ".cache" / "suneung_lit"
    return Path(root) / "tokenized"


def encode_items(
    items: Sequence[Item],
    tokenizer,
    template: PromptTemplate,
    max_length: int,
    max_choices: int,
    cache_dir: str | Path | None = None,
    num_proc: int | None = None,
    for_generation: bool = False,
) -> datasets.Dataset:
    """Tokenize items into a ``datasets.Dataset`` (cached on disk by content), in input order.

    ``for_generation`` ends each prompt where generation starts (the template's assistant prefix) instead of at
    the answer digit. ``reasoning_length`` counts the assistant-turn tokens before the digit of items that carry a
    ``reasoning`` column (rationale training puts its loss on them); 0 otherwise.
    """
    options = option_token_ids(tokenizer, max_choices)
    cache_dir = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    cache_dir.mkdir(parents=True, exist_ok=True)
    fingerprint = _fingerprint(items, template, tokenizer, max_length, for_generation)
    cached = cache_dir / fingerprint
    if (cached / "dataset_info.json").is_file():
        return datasets.load_from_disk(str(cached))

    def encode(batch: dict[str, list]) -> dict[str, list]:
        batch_items = [items[index] for index in batch["index"]]
        chats = [render_chat(item, template, tokenizer) for item in batch_items]
        assistant = [template.assistant_text(item, for_generation) for item in batch_items]
        full = tokenizer([c + a for c, a in zip(chats, assistant, strict=True)], add_special_tokens=False)["input_ids"]
        fitted = [
            ids if len(ids) <= max_length else _shorten(item, ids, template, tokenizer, max_length, for_generation)[0]
            for item, ids in zip(batch_items, full, strict=True)
        ]
        # Only items with a reasoning column need the chat part's length; most data has none, so the chat prompts
        # are not tokenized a second time for them.
        reasoned = [i for i, item in enumerate(batch_items) if item.metadata.get("reasoning", "").strip()]
        chat_ids = tokenizer([chats[i] for i in reasoned], add_special_tokens=False)["input_ids"] if reasoned else []
        chat_lengths = dict(zip(reasoned, map(len, chat_ids), strict=True))
        reasoning = [
            min(len(fitted[i]) - 1, max(0, len(full[i]) - chat_lengths[i])) if i in chat_lengths else 0
            for i in range(len(batch_items))
        ]
        return {
            "input_ids": fitted,
            "reasoning_length": reasoning,
            "length": [len(ids) for ids in fitted],
            "prompt_length": [len(ids) for ids in full],
            "shortened": [len(a) < len(b) for a, b in zip(fitted, full, strict=True)],
        }

    table = datasets.Dataset.from_dict(
        {
            "index": list(range(len(items))),
            "id": [item.id for item in items],
            "num_choices": [item.num_choices for item in items],
            "answer": [item.answer - 1 if item.answer is not None else -1 for item in items],
            "label": [options[item.answer - 1] if item.answer is not None else IGNORE_INDEX for item in items],
            "group": [group_of(item) for item in items],
            "score": [score_or_zero(item) for item in items],
        }
    )
    if num_proc is None:
        num_proc = min(os.cpu_count() or 1, len(items) // MIN_ROWS_PER_PROCESS) or None
    encoded = table.map(
        encode,
        batched=True,
        batch_size=256,
        num_proc=num_proc,
        keep_in_memory=True,
        new_fingerprint=fingerprint,
        desc="tokenizing",
    )
    # Saved under a temporary name and renamed, so an interrupted run never leaves a half-written cache entry.
    partial = cache_dir / f"{fingerprint}.{os.getpid()}.partial"
    encoded.save_to_disk(str(partial))
    try:
        os.replace(partial, cached)
    except OSError:  # another process cached the same content first
        shutil.rmtree(partial, ignore_errors=True)
    return datasets.load_from_disk(str(cached))


def encoding_stats(dataset: datasets.Dataset) -> EncodingStats:
    shortened = [i for i, flag in zip(dataset["id"], dataset["shortened"], strict=True) if flag]
    return EncodingStats(len(dataset), tuple(shortened), tuple(dataset["prompt_length"]))
