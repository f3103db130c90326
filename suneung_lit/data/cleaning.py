"""Cleaning steps for items: each a small named function, run as a configurable pipeline with a report.

A step takes the list of items and returns the new list plus the ids it changed (or dropped). Steps that drop
rows never run on prediction inputs: every test id must reach the submission.
"""

from __future__ import annotations

import csv
import re
import unicodedata
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path

from suneung_lit.data.records import DataValidationError, Item, Problem, parse_literal

StepResult = tuple[list[Item], list[str]]
Step = Callable[[list[Item]], StepResult]

_SPACES = re.compile(r"[ \t\u00a0\u3000]+")
_SPACE_BEFORE_NEWLINE = re.compile(r" *\n *")
# PDF extraction leaves a space between a Hangul syllable and the punctuation after it: "했다 ." -> "했다."
_SPACE_BEFORE_PUNCT = re.compile(r"(?<=[가-힣]) +(?=[.,?!])")
_EMAIL = re.compile(r"\s*[\w.+-]+@[\w-]+(?:\.[\w-]+)+")
# One reporter credit: optional "city=" prefix, names, optional outlet, then 기자/특파원 ("세종=김주완/김유미 기자").
_CREDIT = r"(?:[가-힣]{1,10}=)?[가-힣]{2,4}(?:/[가-힣]{2,4})*\s*(?:[가-힣A-Za-z]{2,10}\s+)?(?:기자|특파원)"
_TRAILING_BYLINE = re.compile(rf"([.!?”\"’)\]])\s*(?:/?\s*{_CREDIT}\s*)+$")
_LEADING_BYLINE = re.compile(r"^\s*\([가-힣]{1,10}=[가-힣A-Za-z]{2,10}\)\s*(?:[가-힣]{2,4}\s*기자\s*=?\s*)?")
_BOGI_MARKER = re.compile(r"[<〈《\[]\s*보\s*기\s*[>〉》\]]")


@dataclass(frozen=True)
class StepReport:
    """What one cleaning step did: the ids it changed, or dropped when ``dropped`` is true."""

    name: str
    ids: tuple[str, ...]
    dropped: bool = False
    note: str = ""

    def __str__(self) -> str:
        verb = "dropped" if self.dropped else "changed"
        shown = ", ".join(self.ids[:8]) + (" ..." if len(self.ids) > 8 else "")
        line = f"{self.name}: {verb} {len(self.ids)} item(s)" + (f" [{shown}]" if self.ids else "")
        return line + (f"; {self.note}" if self.note else "")


@dataclass(frozen=True)
class CleaningReport:
    steps: tuple[StepReport, ...]

    @property
    def dropped_ids(self) -> list[str]:
        return [i for step in self.steps if step.dropped for i in step.ids]

    def __str__(self) -> str:
        return "\n".join(str(step) for step in self.steps) or "no cleaning steps"


def _map_text(items: list[Item], transform: Callable[[str], str], fields: Sequence[str]) -> StepResult:
    """Apply ``transform`` to the given text fields (and choices when listed) of every item."""
    cleaned, changed = [], []
    for item in items:
        updates: dict[str, object] = {}
        for name in fields:
            if name == "choices":
                new_choices = tuple(transform(c) for c in item.choices)
                if new_choices != item.choices:
                    updates["choices"] = new_choices
            else:
                old = getattr(item, name)
                new = transform(old)
                if new != old:
                    updates[name] = new
        if updates:
            changed.append(item.id)
            item = replace(item, **updates)
        cleaned.append(item)
    return cleaned, changed


ALL_TEXT = ("paragraph", "question", "question_plus", "choices")


def normalize_text(text: str) -> str:
    """Collapse runs of spaces, trim lines and remove the PDF space before punctuation ("다 ." -> "다.")."""
    text = _SPACES.sub(" ", text)
    text = _SPACE_BEFORE_NEWLINE.sub("\n", text)
    text = _SPACE_BEFORE_PUNCT.sub("", text)
    return text.strip()


def normalize_whitespace(items: list[Item]) -> StepResult:
    return _map_text(items, normalize_text, ALL_TEXT)


def remove_private_use(text: str) -> str:
    """Drop private-use code points (PDF font glyphs that no tokenizer knows)."""
    return "".join(ch for ch in text if unicodedata.category(ch) != "Co")


def strip_private_use(items: list[Item]) -> StepResult:
    return _map_text(items, remove_private_use, ALL_TEXT)


def remove_byline(text: str) -> str:
    """Remove e-mail addresses and reporter credits at the start or end of a news-style paragraph."""
    text = _EMAIL.sub("", text)
    text = _LEADING_BYLINE.sub("", text)
    return _TRAILING_BYLINE.sub(r"\1", text.rstrip())


def remove_bylines(items: list[Item]) -> StepResult:
    return _map_text(items, remove_byline, ("paragraph",))


def move_bogi_to_question_plus(items: list[Item]) -> StepResult:
    """Move a <보기> block written inside the paragraph into question_plus, where the prompt expects it."""
    cleaned, changed = [], []
    for item in items:
        match = _BOGI_MARKER.search(item.paragraph)
        if match and not item.question_plus:
            block = item.paragraph[match.end() :].strip()
            if block:
                item = replace(item, paragraph=item.paragraph[: match.start()].rstrip(), question_plus=block)
                changed.append(item.id)
        cleaned.append(item)
    return cleaned, changed


def _content_key(item: Item) -> tuple:
    return (item.paragraph, item.question, item.question_plus, item.choices)


def drop_duplicates(items: list[Item]) -> StepResult:
    """Drop later copies of an item with identical text and answer (ids may differ).

    Copies whose answers disagree are kept: which label is right is a human decision, made in a
    corrections file.
    """
    first: dict[tuple, Item] = {}
    kept, dropped = [], []
    for item in items:
        key = _content_key(item)
        seen = first.get(key)
        if seen is not None and seen.answer == item.answer:
            dropped.append(item.id)
            continue
        first.setdefault(key, item)
        kept.append(item)
    return kept, dropped


def conflicting_duplicates(items: list[Item]) -> list[tuple[str, str]]:
    """Pairs of ids with identical text but different answers."""
    first: dict[tuple, Item] = {}
    pairs = []
    for item in items:
        seen = first.setdefault(_content_key(item), item)
        if seen is not item and seen.answer != item.answer:
            pairs.append((seen.id, item.id))
    return pairs


STEPS: dict[str, Step] = {
    "normalize_whitespace": normalize_whitespace,
    "strip_private_use": strip_private_use,
    "move_bogi_to_question_plus": move_bogi_to_question_plus,
    "remove_bylines": remove_bylines,
    "drop_duplicates": drop_duplicates,
}
ROW_DROPPING_STEPS = {"drop_duplicates"}
DEFAULT_STEPS = (
    "strip_private_use",
    "normalize_whitespace",
    "move_bogi_to_question_plus",
    "remove_bylines",
    "drop_duplicates",
)


@dataclass(frozen=True)
class Correction:
    """A reviewed fix for one item: drop it, or set its answer or its choices; ``reason`` and ``source`` say why
    and on whose word (kept from the file's optional columns of those names, for reports)."""

    id: str
    action: str
    value: str = ""
    reason: str = ""
    source: str = ""


CORRECTION_ACTIONS = ("drop", "answer", "choices")


def load_corrections(path: str | Path) -> list[Correction]:
    """Read a corrections CSV with columns ``id, action, value`` (optional ``reason``, ``source``); one row per id."""
    path = Path(path)
    problems: list[Problem] = []
    if not path.is_file():
        raise DataValidationError([Problem(str(path), None, None, None, "corrections file not found")])
    with path.open(encoding="utf-8-sig", newline="") as handle:
        reader = csv.DictReader(handle)
        missing = {"id", "action"} - set(reader.fieldnames or [])
        if missing:
            raise DataValidationError([Problem(str(path), None, None, None, f"missing column(s) {sorted(missing)}")])
        corrections = []
        seen: set[str] = set()
        for row_number, row in enumerate(reader, start=1):
            item_id = (row.get("id") or "").strip()
            if item_id in seen:
                # Two fixes for one id would apply in an order nobody reviewed.
                problems.append(Problem(str(path), row_number, item_id, "id", "a second correction for this id"))
                continue
            seen.add(item_id)
            action = (row.get("action") or "").strip()
            if action not in CORRECTION_ACTIONS:
                problems.append(
                    Problem(
                        str(path),
                        row_number,
                        row.get("id"),
                        "action",
                        f"{action!r} not in {CORRECTION_ACTIONS}",
                    )
                )
                continue
            corrections.append(
                Correction(
                    item_id,
                    action,
                    (row.get("value") or "").strip(),
                    (row.get("reason") or "").strip(),
                    (row.get("source") or "").strip(),
                )
            )
    if problems:
        raise DataValidationError(problems)
    return corrections


def apply_corrections(
    items: list[Item],
    corrections: Sequence[Correction],
    source: str = "corrections",
    allow_drops: bool = True,
    every_id_present: bool = True,
) -> StepResult:
    """Apply reviewed fixes. With ``every_id_present`` an id that is not in the data is an error, so typos do not
    pass silently; without it (data that is part of, or apart from, the set the fixes were made for) such ids
    are passed over."""
    by_id = {c.id: c for c in corrections}
    known = {item.id for item in items}
    problems = [
        Problem(source, None, c.id, "id", "correction names an id that is not in the data")
        for c in corrections
        if c.id not in known and every_id_present
    ]
    result, touched = [], []
    for item in items:
        fix = by_id.get(item.id)
        if fix is None:
            result.append(item)
            continue
        if fix.action == "drop":
            if allow_drops:
                touched.append(item.id)
                continue
            result.append(item)
            continue
        try:
            if fix.action == "answer":
                answer = int(fix.value)
                if not 1 <= answer <= item.num_choices:
                    raise ValueError(f"answer {answer} is outside 1..{item.num_choices}")
                item = replace(item, answer=answer)
            else:
                choices = parse_literal(fix.value)
                if not isinstance(choices, (list, tuple)) or len(choices) < 2:
                    raise ValueError("choices must be a list literal with at least 2 entries")
                choices = tuple(str(c) for c in choices)
                if item.answer is not None and item.answer > len(choices):
                    raise ValueError(f"answer {item.answer} no longer fits {len(choices)} choices")
                item = replace(item, choices=choices)
        except ValueError as err:
            problems.append(Problem(source, None, item.id, "value", str(err)))
        touched.append(item.id)
        result.append(item)
    if problems:
        raise DataValidationError(problems)
    return result, touched


def describe_corrections(items: Sequence[Item], corrections: Sequence[Correction]) -> list[str]:
    """One line per correction that names an item here: what it changes, from what, and why."""
    by_id = {item.id: item for item in items}
    lines = []
    for fix in corrections:
        item = by_id.get(fix.id)
        if item is None:
            continue
        if fix.action == "drop":
            change = "dropped"
        elif fix.action == "answer":
            change = f"answer {item.answer} -> {fix.value}"
        else:
            change = f"choices replaced ({item.num_choices} -> {fix.value[:60]})"
        why = f": {fix.reason}" if fix.reason else ""
        lines.append(f"{fix.id} {change}{why}")
    return lines


def clean(
    items: list[Item],
    steps: Sequence[str] = DEFAULT_STEPS,
    corrections_path: str | Path | None = None,
    allow_drops: bool = True,
    every_correction_present: bool = True,
) -> tuple[list[Item], CleaningReport]:
    """Run the named steps in order, then the corrections file; report what each changed or dropped.

    With ``allow_drops=False`` (prediction inputs) steps that remove rows are skipped. With
    ``every_correction_present`` (the default) a correction whose id is not in ``items`` is an error.
    """
    unknown = [name for name in steps if name not in STEPS]
    if unknown:
        raise ValueError(f"unknown cleaning step(s) {unknown}; choose from {sorted(STEPS)}")
    reports = []
    for name in steps:
        if name in ROW_DROPPING_STEPS and not allow_drops:
            continue
        items, ids = STEPS[name](items)
        note = ""
        if name == "drop_duplicates":
            conflicts = conflicting_duplicates(items)
            if conflicts:
                note = f"{len(conflicts)} identical item pair(s) with different answers kept: {conflicts[:5]}"
        reports.append(StepReport(name, tuple(ids), dropped=name in ROW_DROPPING_STEPS, note=note))
    if corrections_path is not None:
        corrections = load_corrections(corrections_path)
        drops = {c.id for c in corrections if c.action == "drop"}
        items, ids = apply_corrections(items, corrections, str(corrections_path), allow_drops, every_correction_present)
        dropped = tuple(i for i in ids if i in drops and allow_drops)
        changed = tuple(i for i in ids if i not in dropped)
        reports.append(StepReport("corrections", changed))
        if dropped:
            reports.append(StepReport("corrections", dropped, dropped=True))
    return items, CleaningReport(tuple(reports))
