"""Corpus files -> passages: JSON Lines or CSV with a text field (optional ``id``, ``title``) or folders of .txt files,
split into overlapping character windows."""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from suneung_lit.data.records import jsonl_lines

JSONL_SUFFIXES = {".jsonl", ".json", ".ndjson"}
CSV_SUFFIXES = {".csv", ".tsv"}
# Real corpora (e.g. a Wikipedia dump in CSV) have cells far beyond csv's default 128 KiB field limit.
CSV_FIELD_LIMIT = 1 << 30


class CorpusError(ValueError):
    """A corpus file cannot be read; the message names the file and, where it applies, the row and column."""


@dataclass(frozen=True)
class Passage:
    """One retrievable window of a document. ``doc`` is the document's id; ``id`` is ``doc#n`` for its n-th window."""

    id: str
    doc: str
    title: str
    text: str


@dataclass
class CorpusReport:
    """What reading a corpus did, for the user to check: nothing is left out without being counted here."""

    documents: int = 0
    passages: int = 0
    empty_rows: list[str] = field(default_factory=list)
    duplicate_passages: int = 0

    def lines(self) -> list[str]:
        lines = [f"documents: {self.documents}", f"passages: {self.passages}"]
        if self.duplicate_passages:
            lines.append(f"identical passages indexed once: {self.duplicate_passages}")
        if self.empty_rows:
            shown = ", ".join(self.empty_rows[:10]) + (" ..." if len(self.empty_rows) > 10 else "")
            lines.append(f"rows without text, not indexed: {len(self.empty_rows)} ({shown})")
        return lines


def chunk_text(text: str, size: int, overlap: int) -> list[str]:
    """Windows of at most ``size`` characters, each starting ``overlap`` characters before the previous one ended.

    A window ends at the last whitespace inside it when that leaves it longer than the overlap, so words are rarely
    cut; every character of ``text`` is in some window.
    """
    if size <= 0 or not 0 <= overlap < size:
        raise ValueError(f"need size > 0 and 0 <= overlap < size, got size={size}, overlap={overlap}")
    text = text.strip()
    windows: list[str] = []
    start = 0
    while start < len(text):
        end = min(start + size, len(text))
        if end < len(text):
            cut = max(text.rfind(" ", start, end), text.rfind("\n", start, end))
            if cut - start > overlap:
                end = cut
        windows.append(text[start:end].strip())
        if end >= len(text):
            break
        start = max(end - overlap, start + 1)
    return [w for w in windows if w]


def _read_text(path: Path) -> str:
    try:
        return path.read_bytes().decode("utf-8-sig")
    except OSError as err:
        raise CorpusError(f"{path}: cannot read ({err.strerror})") from err
    except UnicodeDecodeError as err:
        raise CorpusError(f"{path}: not valid UTF-8 at byte {err.start}; save the file as UTF-8") from err


def _jsonl_records(path: Path, text: str) -> Iterator[tuple[int, dict]]:
    for number, line in enumerate(jsonl_lines(text), start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as err:
            raise CorpusError(f"{path}, line {number}: not valid JSON ({err.msg})") from err
        if not isinstance(record, dict):
            raise CorpusError(f"{path}, line {number}: expected a JSON object, got {type(record).__name__}")
        yield number, record


def _csv_records(path: Path, text: str) -> Iterator[tuple[int, dict]]:
    csv.field_size_limit(CSV_FIELD_LIMIT)
    delimiter = "\t" if path.suffix.lower() == ".tsv" else ","
    try:
        # Row numbers count the header as row 1, as a spreadsheet shows them.
        yield from enumerate(csv.DictReader(io.StringIO(text, newline=""), delimiter=delimiter), start=2)
    except csv.Error as err:
        raise CorpusError(f"{path}: not a readable CSV file ({err})") from err


def _records(path: Path, text_field: str) -> Iterator[tuple[str, str, str]]:
    """(document id, title, text) for each record of one file."""
    if path.suffix.lower() == ".txt":
        yield path.stem, path.stem, _read_text(path)
        return
    text = _read_text(path)
    if path.suffix.lower() in JSONL_SUFFIXES:
        records = _jsonl_records(path, text)
    elif path.suffix.lower() in CSV_SUFFIXES:
        records = _csv_records(path, text)
    else:
        raise CorpusError(f"{path}: unsupported corpus file; use .jsonl, .csv, .tsv, .txt or a folder of .txt files")
    where = "line" if path.suffix.lower() in JSONL_SUFFIXES else "row"
    for number, record in records:
        if text_field not in record:
            raise CorpusError(
                f"{path}, {where} {number}: no {text_field!r} field (found {', '.join(map(str, record)) or 'none'}); "
                "name the text field with --text-field"
            )
        value = record[text_field]
        if value is not None and not isinstance(value, str):
            raise CorpusError(f"{path}, {where} {number}, column {text_field!r}: expected text, got {value!r:.60}")
        doc = str(record.get("id") or f"{path.stem}:{number}")
        yield doc, str(record.get("title") or ""), value or ""


def corpus_files(paths: Iterable[str | Path]) -> list[Path]:
    """The files to read: each path itself, or every .txt file under a folder, in a stable order."""
    files: list[Path] = []
    for path in map(Path, paths):
        if path.is_dir():
            found = sorted(p for p in path.rglob("*.txt") if p.is_file())
            if not found:
                raise CorpusError(f"{path}: folder holds no .txt files")
            files.extend(found)
        elif path.is_file():
            files.append(path)
        else:
            raise CorpusError(f"{path}: no such file or folder")
    return files


def read_passages(
    paths: Iterable[str | Path], text_field: str = "text", chunk_chars: int = 700, overlap: int = 150
) -> tuple[list[Passage], CorpusReport]:
    """Every passage of the corpus, in file order; identical passage texts are kept once (and counted)."""
    paths = [Path(p) for p in paths]
    report = CorpusReport()
    passages: list[Passage] = []
    seen_texts: set[str] = set()
    seen_docs: dict[str, int] = {}
    for path in corpus_files(paths):
        for doc, title, text in _records(path, text_field):
            if not text.strip():
                report.empty_rows.append(f"{path.name}:{doc}")
                continue
            # Documents keep their own id; a repeated id gets a suffix so passage ids stay unique.
            seen_docs[doc] = seen_docs.get(doc, 0) + 1
            doc_id = doc if seen_docs[doc] == 1 else f"{doc}~{seen_docs[doc]}"
            report.documents += 1
            for number, window in enumerate(chunk_text(text, chunk_chars, overlap)):
                if window in seen_texts:
                    report.duplicate_passages += 1
                    continue
                seen_texts.add(window)
                passages.append(Passage(f"{doc_id}#{number}", doc_id, title, window))
    report.passages = len(passages)
    if not passages:
        raise CorpusError(f"the corpus ({', '.join(map(str, paths))}) holds no text to index")
    return passages, report
