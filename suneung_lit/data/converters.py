"""Public Korean multiple-choice sets -> items: KMMLU, HAE-RAE Bench, CLIcK, KICE CSAT JSON, CSAT-QA, flat files.

Each converter returns the items it could build and the problems it found, each located by file and record
position, so a caller can fail on the first bad record or keep the good ones (``--skip-invalid``). Ids are
prefixed by the source; the source name is kept as ``source`` metadata.
"""

from __future__ import annotations

import csv
import json
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from suneung_lit.data.records import (
    DEFAULT_MAX_CHOICES,
    DataValidationError,
    Item,
    Problem,
    jsonl_lines,
    load_items,
    optional_text,
    parse_literal,
)

_SECTION = re.compile(r"^###\s*(지문|질문|선택지|문장|참고)\s*:\s*", re.MULTILINE)
_OPTION_LABEL = re.compile(r"^\s*\(?([A-Ea-e]|[1-5])[).]\s*")
_LETTER_ANSWER = re.compile(r"^\(?\s*([A-Ea-e])\s*\)?$")
_SCORE_SUFFIX = re.compile(r"\s*\[\s*(\d+)\s*점\s*\]\s*$")


@dataclass
class Conversion:
    items: list[Item] = field(default_factory=list)
    problems: list[Problem] = field(default_factory=list)
    rejected: list[dict[str, Any]] = field(default_factory=list)

    def reject(self, path: Path, position: int, item_id: str | None, column: str | None, message: str, raw: Any):
        self.problems.append(Problem(str(path), position, item_id, column, message))
        self.rejected.append({"file": str(path), "record": position, "reason": message, "raw": raw})


def _text(value: Any) -> str:
    return optional_text(value).strip()


def _check(conversion: Conversion, path: Path, position: int, item: Item, raw: Any, max_choices: int) -> None:
    """Keep the item if it is valid as the data layer defines it, else record why not."""
    reason = None
    if not item.question.strip():
        reason = ("question", "empty question")
    elif not 2 <= item.num_choices <= max_choices:
        reason = ("choices", f"has {item.num_choices} choices; supported is 2 to {max_choices}")
    elif any(not c.strip() for c in item.choices):
        reason = ("choices", "has an empty choice")
    elif item.answer is None or not 1 <= item.answer <= item.num_choices:
        reason = ("answer", f"answer {item.answer} is outside 1..{item.num_choices}")
    if reason:
        conversion.reject(path, position, item.id, reason[0], reason[1], raw)
    else:
        conversion.items.append(item)


def _csv_records(path: Path) -> list[dict[str, str]]:
    with path.open(encoding="utf-8-sig", newline="") as handle:
        return list(csv.DictReader(handle))


def _parse_list(value: Any) -> list | None:
    if isinstance(value, list):
        return value
    try:
        parsed = parse_literal(str(value))
    except ValueError:
        return None
    return list(parsed) if isinstance(parsed, (list, tuple)) else None


def convert_kmmlu(path: Path, conversion: Conversion, max_choices: int) -> None:
    """KMMLU CSV: ``question, answer (1-4), A, B, C, D, Category, Human Accuracy``; no paragraph."""
    for position, row in enumerate(_csv_records(path), start=1):
        item_id = f"kmmlu-{path.stem}-{position}"
        try:
            answer = int(float(row.get("answer", "")))
        except ValueError:
            conversion.reject(path, position, item_id, "answer", f"answer {row.get('answer')!r} is not a number", row)
            continue
        choices = tuple(_text(row.get(letter)) for letter in "ABCD")
        metadata = {"source": "kmmlu", "category": _text(row.get("Category"))}
        if _text(row.get("Human Accuracy")):
            metadata["human_accuracy"] = _text(row.get("Human Accuracy"))
        item = Item(item_id, "", _text(row.get("question")), choices, answer, "", metadata)
        _check(conversion, path, position, item, row, max_choices)


def _sections(query: str) -> dict[str, str]:
    parts = _SECTION.split(query)
    if len(parts) == 1:
        return {"질문": query.strip()}
    found = {}
    for name, body in zip(parts[1::2], parts[2::2], strict=True):
        found[name] = body.strip()
    return found


def convert_haerae(path: Path, conversion: Conversion, max_choices: int) -> None:
    """HAE-RAE Bench CSV: ``query`` with ``### 지문:``-style sections, ``options`` list literal, ``(A)`` answers."""
    for position, row in enumerate(_csv_records(path), start=1):
        item_id = f"haerae-{path.stem}-{position}"
        sections = _sections(row.get("query", ""))
        options = _parse_list(row.get("options", ""))
        if options is None:
            conversion.reject(path, position, item_id, "options", "options is not a list literal", row)
            continue
        letter = _LETTER_ANSWER.match(_text(row.get("answer")))
        if not letter:
            conversion.reject(path, position, item_id, "answer", f"answer {row.get('answer')!r} is not (A)-(E)", row)
            continue
        extra = [sections[name] for name in ("문장", "참고") if sections.get(name)]
        item = Item(
            item_id,
            sections.get("지문", ""),
            sections.get("질문", ""),
            tuple(_OPTION_LABEL.sub("", _text(option)) for option in options),
            "abcde".index(letter.group(1).lower()) + 1,
            "\n".join(extra),
            {"source": "haerae"},
        )
        _check(conversion, path, position, item, row, max_choices)


def _json_records(path: Path, conversion: Conversion) -> list[Any]:
    try:
        data = json.loads(path.read_text(encoding="utf-8-sig"))
    except (ValueError, UnicodeDecodeError) as err:
        conversion.reject(path, 0, None, None, f"not valid JSON: {err}", None)
        return []
    if not isinstance(data, list):
        conversion.reject(path, 0, None, None, "expected a JSON list of records", None)
        return []
    return data


def _click_problems(record: dict) -> list[dict]:
    """The release nests problems in sets (``problems``); the Hugging Face copy is flat (one problem per record)."""
    problems = record.get("problems")
    return problems if isinstance(problems, list) else [record]


def convert_click(path: Path, conversion: Conversion, max_choices: int) -> None:
    """CLIcK JSON (release sets with ``problems``, or flat records); the answer is the correct choice's text.

    The release reuses ids across files (Functional and Grammar both hold ``csat_07_6``) and within a file
    (Grammar_CSAT repeats ``csat_14_11``), so ids are ``click-<file stem>-<id>``, and a repeat within a file gets
    ``~2``, ``~3`` in file order: unique, and stable for an unchanged file.
    """
    seen: dict[str, int] = {}
    for position, record in enumerate(_json_records(path, conversion), start=1):
        if not isinstance(record, dict):
            conversion.reject(path, position, f"click-{path.stem}-{position}", None, "record is not an object", record)
            continue
        base = f"click-{path.stem}-{_text(record.get('id')) or position}"
        seen[base] = seen.get(base, 0) + 1
        set_id = base if seen[base] == 1 else f"{base}~{seen[base]}"
        problems = _click_problems(record)
        for number, problem in enumerate(problems, start=1):
            item_id = set_id if len(problems) == 1 else f"{set_id}-{number}"
            if not isinstance(problem, dict):
                conversion.reject(path, position, item_id, None, "problem is not an object", problem)
                continue
            choices = tuple(_text(c) for c in problem.get("choices") or [])
            answer_text = _text(problem.get("answer"))
            if answer_text not in choices:
                conversion.reject(
                    path, position, item_id, "answer", f"answer {answer_text!r} is not one of the choices", record
                )
                continue
            paragraph = _text(problem.get("paragraph")) if problem is record else _text(record.get("paragraph"))
            item = Item(
                item_id,
                paragraph,
                _text(problem.get("question")),
                choices,
                choices.index(answer_text) + 1,
                "",
                {"source": "click", "file": path.stem, "original_id": _text(record.get("id"))},
            )
            _check(conversion, path, position, item, record, max_choices)


def convert_kice(path: Path, conversion: Conversion, max_choices: int) -> None:
    """KICE CSAT JSON: passage sets with ``problems``; one row per problem, the set's paragraph repeated."""
    position = 0
    for set_record in _json_records(path, conversion):
        set_id = _text(set_record.get("id")) if isinstance(set_record, dict) else ""
        problems = set_record.get("problems") if isinstance(set_record, dict) else None
        if not isinstance(problems, list):
            position += 1
            conversion.reject(path, position, f"kice-{set_id}", "problems", "set has no problems list", set_record)
            continue
        for number, problem in enumerate(problems, start=1):
            position += 1
            item_id = f"kice-{set_id}-{number}"
            if not isinstance(problem, dict):
                conversion.reject(path, position, item_id, None, "problem is not an object", problem)
                continue
            question = _text(problem.get("question"))
            score = problem.get("score")
            suffix = _SCORE_SUFFIX.search(question)
            if suffix:
                score = score or int(suffix.group(1))
                question = question[: suffix.start()].strip()
            try:
                answer = int(problem.get("answer"))
            except (TypeError, ValueError):
                conversion.reject(path, position, item_id, "answer", f"answer {problem.get('answer')!r}", problem)
                continue
            # One file is one paper (2023_11_KICE.json): the exam its points are reported for.
            metadata = {"source": f"kice/{path.stem}", "set": set_id}
            if score is not None:
                metadata["score"] = str(score)
            if set_record.get("type") or problem.get("type"):
                metadata["type"] = _text(problem.get("type") or set_record.get("type"))
            paragraph = "" if problem.get("no_paragraph") else _text(set_record.get("paragraph"))
            item = Item(
                item_id,
                paragraph,
                question,
                tuple(_text(c) for c in problem.get("choices") or []),
                answer,
                _text(problem.get("question_plus")),
                metadata,
            )
            _check(conversion, path, position, item, problem, max_choices)


_CSATQA_SECTION = re.compile(r"^\s*###\s*(Context|Question|Options)\s*:\s*", re.MULTILINE | re.IGNORECASE)
_CSATQA_OPTION = re.compile(r"(?:^|\s)\(([1-5])\)\s*")


def _table_records(path: Path) -> list[dict[str, Any]]:
    """Rows of an .xlsx sheet (the first one), a CSV or a JSON Lines file, as dicts keyed by the header."""
    if path.suffix.lower() == ".xlsx":
        try:
            import openpyxl
        except ImportError as err:
            raise ImportError("reading .xlsx needs openpyxl: pip install 'suneung-lit[data]'") from err
        sheet = openpyxl.load_workbook(path, read_only=True, data_only=True).worksheets[0]
        rows = list(sheet.iter_rows(values_only=True))
        if not rows:
            return []
        header = [str(cell).strip() if cell is not None else "" for cell in rows[0]]
        return [dict(zip(header, row, strict=False)) for row in rows[1:] if any(c is not None for c in row)]
    if path.suffix.lower() in (".jsonl", ".ndjson"):
        return [json.loads(line) for line in jsonl_lines(path.read_text(encoding="utf-8-sig")) if line.strip()]
    return _csv_records(path)


def convert_csatqa(path: Path, conversion: Conversion, max_choices: int) -> None:
    """CSAT-QA (HAE-RAE's csatqa.xlsx, or a CSV/JSONL export): ``instruction`` and ``answer`` (1-5) columns.

    The instruction holds ``### Context:`` (optional), ``### Question:`` and ``### Options:`` sections, the
    options numbered ``(1)``..``(5)``.
    """
    for position, row in enumerate(_table_records(path), start=1):
        item_id = f"csatqa-{path.stem}-{position}"
        parts = _CSATQA_SECTION.split(_text(row.get("instruction")))
        sections = {name.lower(): body.strip() for name, body in zip(parts[1::2], parts[2::2], strict=True)}
        if "question" not in sections or "options" not in sections:
            conversion.reject(path, position, item_id, "instruction", "needs ### Question: and ### Options:", row)
            continue
        pieces = _CSATQA_OPTION.split(" " + sections["options"])
        numbers = [int(n) for n in pieces[1::2]]
        if numbers != list(range(1, len(numbers) + 1)):
            conversion.reject(path, position, item_id, "instruction", f"options numbered {numbers}, not (1)..", row)
            continue
        try:
            answer = int(float(_text(row.get("answer"))))
        except ValueError:
            conversion.reject(path, position, item_id, "answer", f"answer {row.get('answer')!r} is not a number", row)
            continue
        item = Item(
            item_id,
            sections.get("context", ""),
            sections["question"],
            tuple(piece.strip() for piece in pieces[2::2]),
            answer,
            "",
            {"source": "csatqa"},
        )
        _check(conversion, path, position, item, row, max_choices)


def convert_flat(path: Path, conversion: Conversion, max_choices: int, zero_based: bool = False) -> None:
    """Our flat CSV/JSONL shape, optionally with 0-based answers; ids get the file stem as prefix."""
    try:
        items = load_items(path, max_choices, zero_based=zero_based)
    except DataValidationError as err:
        for problem in err.problems:
            conversion.reject(path, problem.row or 0, problem.item_id, problem.column, problem.message, None)
        return
    for item in items:
        metadata = {"source": item.metadata.get("source") or path.stem, **item.metadata}
        conversion.items.append(
            Item(
                f"{path.stem}-{item.id}",
                item.paragraph,
                item.question,
                item.choices,
                item.answer,
                item.question_plus,
                metadata,
            )
        )


CONVERTERS: dict[str, Callable[[Path, Conversion, int], None]] = {
    "kmmlu": convert_kmmlu,
    "haerae": convert_haerae,
    "click": convert_click,
    "kice": convert_kice,
    "csatqa": convert_csatqa,
    "flat": convert_flat,
}


def convert(
    fmt: str, paths: Iterable[str | Path], max_choices: int = DEFAULT_MAX_CHOICES, zero_based: bool = False
) -> Conversion:
    """Convert files of one public format; check ``problems`` (and ``rejected``) before using ``items``."""
    if fmt not in CONVERTERS:
        raise ValueError(f"unknown format {fmt!r}; choose from {sorted(CONVERTERS)}")
    conversion = Conversion()
    for path in paths:
        if fmt == "flat":
            convert_flat(Path(path), conversion, max_choices, zero_based)
        else:
            CONVERTERS[fmt](Path(path), conversion, max_choices)
    seen: set[str] = set()
    for item in conversion.items:
        if item.id in seen:
            raise DataValidationError([Problem(fmt, None, item.id, "id", "two records convert to the same id")])
        seen.add(item.id)
    return conversion
