"""Multiple-choice items: the record type, file loading and validation.

Two CSV shapes are read: the competition shape (``id, paragraph, problems, question_plus`` where ``problems``
is a Python-dict literal holding question, choices and answer) and the flat shape (``id, paragraph, question,
choices, answer, question_plus``). JSON Lines files hold the flat shape, one object per line. Every problem in
a file is collected and raised together as one :class:`DataValidationError`, so a user fixes a file in one go.
"""

from __future__ import annotations

import ast
import csv
import io
import json
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from suneung_lit.atomic_write import write_atomically

DEFAULT_MAX_CHOICES = 5
MAX_REPORTED_PROBLEMS = 50
# Cells this long are not parsed as literals: a pathological literal can exhaust memory or recursion.
MAX_LITERAL_CHARS = 200_000

COMPETITION_COLUMNS = ("id", "paragraph", "problems")
FLAT_COLUMNS = ("id", "paragraph", "question", "choices")
JSONL_SUFFIXES = {".jsonl", ".json", ".ndjson"}
KNOWN_COLUMNS = {"id", "paragraph", "problems", "question", "choices", "answer", "question_plus"}
# Strings that spreadsheet and pandas round-trips leave in cells that were empty.
EMPTY_MARKERS = {"", "nan", "NaN", "None", "null"}


@dataclass(frozen=True)
class Item:
    """One multiple-choice question, answer 1-based or None for unlabelled (test) items."""

    id: str
    paragraph: str
    question: str
    choices: tuple[str, ...]
    answer: int | None = None
    question_plus: str = ""
    metadata: Mapping[str, str] = field(default_factory=dict)

    @property
    def num_choices(self) -> int:
        return len(self.choices)


@dataclass(frozen=True)
class Problem:
    """One thing wrong with an input file, located precisely enough to fix it."""

    path: str
    row: int | None
    item_id: str | None
    column: str | None
    message: str

    def __str__(self) -> str:
        where = [self.path]
        if self.row is not None:
            where.append(f"row {self.row}")
        if self.item_id:
            where.append(f"id {self.item_id!r}")
        if self.column:
            where.append(f"column {self.column!r}")
        return f"{', '.join(where)}: {self.message}"


class DataValidationError(ValueError):
    """An input file is not usable; ``problems`` lists every issue found (up to a cap)."""

    def __init__(self, problems: Sequence[Problem], total: int | None = None):
        self.problems = list(problems)
        self.total = total if total is not None else len(self.problems)
        lines = [f"{self.total} problem(s) found in input data:"]
        lines += [f"  - {p}" for p in self.problems]
        if self.total > len(self.problems):
            lines.append(f"  ... and {self.total - len(self.problems)} more")
        super().__init__("\n".join(lines))


class _ProblemLog:
    """Collects problems for one file; keeps the first MAX_REPORTED_PROBLEMS and counts the rest."""

    def __init__(self, path: Path):
        self.path = str(path)
        self.kept: list[Problem] = []
        self.total = 0

    def add(self, row: int | None, item_id: str | None, column: str | None, message: str) -> None:
        self.total += 1
        if len(self.kept) < MAX_REPORTED_PROBLEMS:
            self.kept.append(Problem(self.path, row, item_id, column, message))

    def raise_if_any(self) -> None:
        if self.total:
            raise DataValidationError(self.kept, self.total)


def load_items(
    path: str | Path,
    max_choices: int = DEFAULT_MAX_CHOICES,
    zero_based: bool = False,
    answer_column: str | None = None,
) -> list[Item]:
    """Read and validate a CSV (competition or flat shape) or JSON Lines file.

    ``zero_based`` reads answers numbered from 0 (as some public sets store them) and stores them 1-based.
    ``answer_column`` reads the answer from that column (e.g. ``answer_true``) instead of ``problems.answer`` or
    ``answer``; the file must have it. Raises DataValidationError listing every problem; returns the items in
    file order otherwise.
    """
    path = Path(path)
    log = _ProblemLog(path)
    if not path.is_file():
        log.add(None, None, None, "file not found")
        log.raise_if_any()
    text = _read_text(path, log)
    reader = _jsonl_rows if path.suffix.lower() in JSONL_SUFFIXES else _csv_rows
    rows = reader(text, log)
    if answer_column and rows and answer_column not in rows[0][1]:
        log.add(None, None, answer_column, f"answer_column {answer_column!r} is not a column of this file")
    log.raise_if_any()
    items = _rows_to_items(rows, log, max_choices, 1 if zero_based else 0, answer_column)
    log.raise_if_any()
    return items


def load_many(paths: Iterable[str | Path], max_choices: int = DEFAULT_MAX_CHOICES) -> list[Item]:
    """Load several files, raising one error that covers all of them."""
    items: list[Item] = []
    problems: list[Problem] = []
    total = 0
    for path in paths:
        try:
            items.extend(load_items(path, max_choices))
        except DataValidationError as err:
            problems.extend(err.problems)
            total += err.total
    if total:
        raise DataValidationError(problems[:MAX_REPORTED_PROBLEMS], total)
    return items


def _read_text(path: Path, log: _ProblemLog) -> str:
    raw = path.read_bytes()
    try:
        return raw.decode("utf-8-sig")
    except UnicodeDecodeError as err:
        line = raw[: err.start].count(b"\n") + 1
        log.add(None, None, None, f"not valid UTF-8 at byte {err.start} (line {line}); save the file as UTF-8")
        log.raise_if_any()
        raise AssertionError("unreachable") from err


def _csv_rows(text: str, log: _ProblemLog) -> list[tuple[int, dict[str, Any]]]:
    if "\x00" in text:
        log.add(None, None, None, "contains NUL bytes; this is not a text CSV file")
        return []
    reader = csv.reader(io.StringIO(text, newline=""))
    try:
        header = next(reader)
    except StopIteration:
        log.add(None, None, None, "file is empty (no header row)")
        return []
    except csv.Error as err:
        log.add(1, None, None, f"unreadable header: {err}")
        return []
    header = [name.strip() for name in header]
    if not _check_header(header, log):
        return []
    rows: list[tuple[int, dict[str, Any]]] = []
    row_number = 0
    while True:
        try:
            cells = next(reader)
        except StopIteration:
            break
        except csv.Error as err:
            log.add(row_number + 1, None, None, f"malformed CSV near line {reader.line_num}: {err}")
            break
        row_number += 1
        if not cells:
            continue  # a blank line is not a record; a row of empty cells is, and fails validation below
        if len(cells) != len(header):
            item_id = cells[header.index("id")] if len(cells) > header.index("id") else None
            log.add(
                row_number,
                item_id,
                None,
                f"has {len(cells)} fields but the header has {len(header)} (unbalanced quotes or stray commas?)",
            )
            continue
        rows.append((row_number, dict(zip(header, cells, strict=True))))
    return rows


def jsonl_lines(text: str) -> list[str]:
    """The lines of a JSON Lines text: split at newlines only. ``str.splitlines`` also splits at U+2028, U+2029,
    U+0085 and form feeds, which JSON allows unescaped inside strings (writers with ``ensure_ascii=False`` leave
    them so), and would cut such a record in two."""
    return [line.removesuffix("\r") for line in text.split("\n")]


def _jsonl_rows(text: str, log: _ProblemLog) -> list[tuple[int, dict[str, Any]]]:
    rows: list[tuple[int, dict[str, Any]]] = []
    header_checked = False
    for row_number, line in enumerate(jsonl_lines(text), start=1):
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
        except (json.JSONDecodeError, RecursionError) as err:
            log.add(row_number, None, None, f"not valid JSON: {err}")
            continue
        if not isinstance(obj, dict):
            log.add(row_number, None, None, f"expected a JSON object, got {type(obj).__name__}")
            continue
        if not header_checked:
            header_checked = True
            if not _check_header(list(obj), log):
                return []
        rows.append((row_number, obj))
    if not header_checked and not log.total:
        log.add(None, None, None, "file is empty (no records)")
    return rows


def _check_header(columns: Sequence[str], log: _ProblemLog) -> bool:
    present = set(columns)
    duplicated = sorted({c for c in columns if list(columns).count(c) > 1})
    if duplicated:
        log.add(None, None, None, f"duplicate column names: {duplicated}")
        return False
    if "problems" in present:
        missing = [c for c in COMPETITION_COLUMNS if c not in present]
    else:
        missing = [c for c in FLAT_COLUMNS if c not in present]
    if missing:
        log.add(
            None,
            None,
            None,
            f"missing column(s) {missing}; expected either {list(COMPETITION_COLUMNS)} (+ question_plus) "
            f"or {list(FLAT_COLUMNS)} (+ answer, question_plus); found {list(columns)}",
        )
        return False
    return True


def _rows_to_items(
    rows: list[tuple[int, dict[str, Any]]],
    log: _ProblemLog,
    max_choices: int,
    answer_shift: int = 0,
    answer_column: str | None = None,
) -> list[Item]:
    items: list[Item] = []
    first_row_of_id: dict[str, int] = {}
    for row_number, row in rows:
        item = _row_to_item(row_number, row, log, max_choices, answer_shift, answer_column)
        if item is None:
            continue
        if item.id in first_row_of_id:
            log.add(row_number, item.id, "id", f"duplicate id (first seen at row {first_row_of_id[item.id]})")
            continue
        first_row_of_id[item.id] = row_number
        items.append(item)
    return items


def _row_to_item(
    row_number: int,
    row: Mapping[str, Any],
    log: _ProblemLog,
    max_choices: int,
    answer_shift: int = 0,
    answer_column: str | None = None,
) -> Item | None:
    errors_before = log.total
    item_id = _text(row.get("id")).strip()
    if not item_id:
        log.add(row_number, None, "id", "empty id")
    paragraph = optional_text(row.get("paragraph"))  # "nan" from pandas round-trips means empty
    question_plus = optional_text(row.get("question_plus"))

    if "problems" in row:
        problem = _parse_literal(row.get("problems"), dict, row_number, item_id, "problems", log)
        if problem is None:
            return None
        question = _text(problem.get("question"))
        choices_value = problem.get("choices")
        answer_value = problem.get("answer")
        # The competition test file repeats <보기> inside the dict; the column wins when both are set.
        question_plus = question_plus or optional_text(problem.get("question_plus"))
        choices_column = "problems.choices"
        answer_column_name = "problems.answer"
        question_column = "problems.question"
    else:
        question = _text(row.get("question"))
        choices_value = row.get("choices")
        if isinstance(choices_value, str):
            choices_value = _parse_literal(choices_value, list, row_number, item_id, "choices", log)
            if choices_value is None:
                return None
        answer_value = row.get("answer")
        choices_column, answer_column_name, question_column = "choices", "answer", "question"
    if answer_column:
        answer_value, answer_column_name = row.get(answer_column), answer_column

    if not question.strip():
        log.add(row_number, item_id, question_column, "empty question")
    choices = _validate_choices(choices_value, row_number, item_id, choices_column, log, max_choices)
    answer = _validate_answer(answer_value, choices, row_number, item_id, answer_column_name, log, answer_shift)
    if log.total > errors_before or choices is None:
        return None
    used = KNOWN_COLUMNS | {answer_column}
    metadata = {k: _text(v) for k, v in row.items() if k not in used and k is not None}
    return Item(item_id, paragraph, question, choices, answer, question_plus, metadata)


ANSWER_LIKE_COLUMNS = ("answer_true", "answer", "label", "gold", "correct", "target")


def answers_elsewhere(items: Sequence[Item]) -> str | None:
    """A metadata column that holds answers for unlabelled items (e.g. ``answer_true`` in a competition file).

    Such a file would otherwise read as unlabelled; callers point the user at ``answer_column``.
    """
    if not items or any(item.answer is not None for item in items):
        return None
    for column in ANSWER_LIKE_COLUMNS:
        values = [item.metadata.get(column, "").strip() for item in items]
        if values and all(
            v.isdigit() and 1 <= int(v) <= item.num_choices for v, item in zip(values, items, strict=True)
        ):
            return column
    return None


def _text(value: Any) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return ""
    return value if isinstance(value, str) else str(value)


def optional_text(value: Any) -> str:
    """Cell text, with the markers that empty cells turn into ("nan", "None", ...) read as empty."""
    text = _text(value)
    return "" if text.strip() in EMPTY_MARKERS else text


def parse_literal(text: str) -> Any:
    """A JSON or Python literal; never executed as code. ValueError (caused by the parser's error) otherwise."""
    try:
        return json.loads(text)
    except (ValueError, RecursionError):
        pass
    try:
        # literal_eval only builds Python literals; it never executes code.
        return ast.literal_eval(text)
    except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError) as err:
        raise ValueError(f"not a JSON or Python literal: {text[:40]!r}") from err


def _parse_literal(value: Any, expected: type, row: int, item_id: str, column: str, log: _ProblemLog) -> Any | None:
    if isinstance(value, expected):
        return value
    text = _text(value).strip()
    if not text:
        log.add(row, item_id, column, f"empty; expected a {expected.__name__} literal")
        return None
    if len(text) > MAX_LITERAL_CHARS:
        log.add(row, item_id, column, f"literal is {len(text)} characters, over the {MAX_LITERAL_CHARS} limit")
        return None
    try:
        parsed = parse_literal(text)
    except ValueError as err:
        log.add(row, item_id, column, f"cannot parse {expected.__name__} literal ({type(err.__cause__).__name__})")
        return None
    if not isinstance(parsed, expected):
        log.add(row, item_id, column, f"expected a {expected.__name__}, got {type(parsed).__name__}")
        return None
    return parsed


def _validate_choices(
    value: Any, row: int, item_id: str, column: str, log: _ProblemLog, max_choices: int
) -> tuple[str, ...] | None:
    if not isinstance(value, (list, tuple)):
        log.add(row, item_id, column, f"expected a list of choices, got {type(value).__name__}")
        return None
    if not 2 <= len(value) <= max_choices:
        log.add(row, item_id, column, f"has {len(value)} choices; supported is 2 to {max_choices}")
        return None
    choices = []
    for position, choice in enumerate(value, start=1):
        if not isinstance(choice, (str, int, float)) or isinstance(choice, bool):
            log.add(row, item_id, column, f"choice {position} is a {type(choice).__name__}, not text")
            return None
        text = _text(choice)
        if not text.strip():
            log.add(row, item_id, column, f"choice {position} is empty")
            return None
        choices.append(text)
    return tuple(choices)


def _validate_answer(
    value: Any,
    choices: tuple[str, ...] | None,
    row: int,
    item_id: str,
    column: str,
    log: _ProblemLog,
    shift: int = 0,
) -> int | None:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return None
    if isinstance(value, str):
        value = value.strip()
        if value in EMPTY_MARKERS:
            return None
    answer: int | None = None
    if isinstance(value, bool):
        answer = None
    elif isinstance(value, int):
        answer = value
    elif isinstance(value, float) and value.is_integer():
        answer = int(value)
    elif isinstance(value, str):
        try:
            number = float(value)
        except ValueError:
            number = math.nan
        if number.is_integer():
            answer = int(number)
    if answer is None:
        log.add(row, item_id, column, f"answer {value!r} is not an integer")
        return None
    answer += shift
    if choices is not None and not 1 <= answer <= len(choices):
        log.add(row, item_id, column, f"answer {answer} is outside 1..{len(choices)}")
        return None
    return answer


def write_items(items: Sequence[Item], path: str | Path, shape: str = "flat") -> None:
    """Write items as a flat CSV (``choices`` as a JSON list) or in the competition shape (``problems`` dict)."""
    metadata_columns = sorted({key for item in items for key in item.metadata})
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    if shape == "competition":
        writer.writerow(["id", "paragraph", "problems", "question_plus", *metadata_columns])
        for item in items:
            problem = {"question": item.question, "choices": list(item.choices), "answer": item.answer or ""}
            row = [item.id, item.paragraph, repr(problem), item.question_plus]
            writer.writerow(row + [item.metadata.get(c, "") for c in metadata_columns])
    elif shape == "flat":
        writer.writerow(["id", "paragraph", "question", "choices", "answer", "question_plus", *metadata_columns])
        for item in items:
            choices = json.dumps(list(item.choices), ensure_ascii=False)
            row = [item.id, item.paragraph, item.question, choices, item.answer or "", item.question_plus]
            writer.writerow(row + [item.metadata.get(c, "") for c in metadata_columns])
    else:
        raise ValueError(f"shape must be 'flat' or 'competition', got {shape!r}")
    write_atomically(Path(path), buffer.getvalue())
