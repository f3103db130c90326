"""Answer extraction from generated text, in a fixed order of trust, never losing an item.

1. ``json``: the text is a JSON object with an ``answer`` of 1..n (the ``cot_json`` template asks for
   ``{"reasoning": "...", "answer": N}``);
2. ``lenient_json``: a JSON-like object inside code fences or other text, with single quotes or trailing commas;
3. ``pattern``: a cue such as "정답: 3", "정답은 ③", "답은 3번", "answer is 3" (full-width digits and circled
   numbers included); the last cue in the text wins, since models state the answer after reasoning;
4. ``fallback``: nothing usable; the caller scores the options at an answer position after the text.

Values outside 1..n count as not found at that step, so a later step gets its chance.
"""

from __future__ import annotations

import json
import re
import unicodedata
from dataclasses import dataclass
from typing import Any

PATHS = ("json", "lenient_json", "pattern", "fallback")
CIRCLED = {chr(0x2460 + i): str(i + 1) for i in range(10)}  # ①..⑩
_FENCE = re.compile(r"```(?:json|JSON)?\s*(.*?)```", re.DOTALL)
_ANSWER_FIELD = re.compile(r"""["']?answer["']?\s*[:=]\s*["']?\s*(\d+)""", re.IGNORECASE)
_CUES = re.compile(
    r"(?:정답|최종\s*답|답|answer(?:\s+is)?|choice)\s*(?:은|는|:|：|=|→|->)?\s*(?:선택지\s*)?(?:번호\s*)?\(?\s*(\d+)\s*\)?\s*번?",
    re.IGNORECASE,
)


@dataclass(frozen=True)
class Extraction:
    answer: int | None  # 1-based, None when only the fallback is left
    path: str


def normalize_digits(text: str) -> str:
    """Full-width digits become ASCII (NFKC) and circled numbers become digits."""
    text = unicodedata.normalize("NFKC", "".join(CIRCLED.get(ch, ch) for ch in text))
    return text


def _valid(value: Any, num_choices: int) -> int | None:
    try:
        number = int(str(value).strip())
    except (TypeError, ValueError):
        return None
    return number if 1 <= number <= num_choices else None


def _strict_json(text: str, num_choices: int) -> int | None:
    try:
        parsed = json.loads(text.strip())
    except (ValueError, RecursionError):
        return None
    return _valid(parsed.get("answer"), num_choices) if isinstance(parsed, dict) else None


def json_objects(text: str) -> list[str]:
    """Balanced ``{...}`` spans, outermost first, ignoring braces inside double-quoted strings."""
    spans, depth, start, quoted, escaped = [], 0, None, False, False
    for index, char in enumerate(text):
        if quoted:
            escaped = not escaped and char == "\\"
            if char == '"' and not escaped:
                quoted = False
            continue
        if char == '"':
            quoted = True
        elif char == "{":
            if depth == 0:
                start = index
            depth += 1
        elif char == "}" and depth:
            depth -= 1
            if depth == 0 and start is not None:
                spans.append(text[start : index + 1])
    return spans


def _lenient_json(text: str, num_choices: int) -> int | None:
    candidates = [m.group(1) for m in _FENCE.finditer(text)] + [text]
    for candidate in candidates:
        for span in json_objects(candidate):
            for variant in (span, re.sub(r",\s*([}\]])", r"\1", span.replace("'", '"'))):
                found = _strict_json(variant, num_choices)
                if found is not None:
                    return found
    for match in reversed(list(_ANSWER_FIELD.finditer(text))):
        found = _valid(match.group(1), num_choices)
        if found is not None:
            return found
    return None


def _pattern(text: str, num_choices: int) -> int | None:
    for match in reversed(list(_CUES.finditer(text))):
        found = _valid(match.group(1), num_choices)
        if found is not None:
            return found
    return None


def after_thinking(text: str) -> str:
    """The part of a generated text after its thinking block (Qwen3 with ``enable_thinking``): the answer is read
    there only. A block left open (generation ran out of tokens) leaves nothing to read."""
    if "</think>" in text:
        return text.rsplit("</think>", 1)[1]
    return "" if "<think>" in text else text


def extract_answer(text: str, num_choices: int) -> Extraction:
    """The answer a generated text gives (after any thinking block), and which step found it."""
    normalized = normalize_digits(after_thinking(text))
    for path, step in (("json", _strict_json), ("lenient_json", _lenient_json), ("pattern", _pattern)):
        found = step(normalized, num_choices)
        if found is not None:
            return Extraction(found, path)
    return Extraction(None, "fallback")
