"""Text corpora for continued pretraining: reading, checking, de-duplicating and holding passages out.

A corpus is a ``.jsonl`` file (one object per line with a text field), a ``.csv`` file with a text column, or a
folder of ``.txt`` files (one passage each, read recursively in name order); multiple-choice files (competition or
flat shape) give their paragraphs. Every problem stops the run before a model loads, naming the file and the line.
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from suneung_lit.data.records import JSONL_SUFFIXES, Item, jsonl_lines, load_items
from suneung_lit.data.splitting import paragraph_key


class CorpusError(ValueError):
    """A corpus that cannot be used, with the file and line where it goes wrong."""


@dataclass(frozen=True)
class Passage:
    text: str
    where: str  # "file:line" (or the file of a .txt passage), for messages
    id: str = ""  # the record's `id` field when it has one, else the file's stem and line (or the .txt file's stem)


def read_corpus(path: str | Path, text_field: str = "text") -> list[Passage]:
    """The passages of one corpus file or folder, in order; raises ``CorpusError`` naming file and line."""
    path = Path(path)
    if path.is_dir():
        return _text_folder(path)
    if not path.is_file():
        raise CorpusError(f"{path}: no such corpus file or folder")
    suffix = path.suffix.lower()
    if suffix in JSONL_SUFFIXES:
        return _jsonl(path, text_field)
    if suffix == ".csv":
        return _csv(path, text_field)
    if suffix == ".txt":
        return [_txt(path)]
    raise CorpusError(f"{path}: a corpus is .jsonl, .csv, .txt or a folder of .txt files")


def paragraphs_of(path: str | Path) -> list[Passage]:
    """The paragraphs of a multiple-choice file (its items' 지문), each once, in file order."""
    items = load_items(path)
    return [
        Passage(item.paragraph.strip(), f"{path}: item {item.id}", item.id) for item in unique_paragraph_items(items)
    ]


def unique_paragraph_items(items: Iterable[Item]) -> list[Item]:
    seen, kept = set(), []
    for item in items:
        key = paragraph_key(item)
        if key not in seen and item.paragraph.strip():
            seen.add(key)
            kept.append(item)
    return kept


@dataclass(frozen=True)
class Corpus:
    passages: list[Passage]
    duplicates: int  # passages dropped because an earlier one had the same text
    held_out: int  # passages dropped because an excluded file has the same paragraph

    def summary(self) -> str:
        chars = sum(len(p.text) for p in self.passages)
        return (f"corpus: {len(self.passages)} passages, {chars} characters ({self.duplicates} duplicates and "
                f"{self.held_out} passages of excluded files left out)")  # fmt: skip


def build_corpus(
    corpus_paths: Sequence[str | Path] = (),
    items_paths: Sequence[str | Path] = (),
    exclude_paths: Sequence[str | Path] = (),
    text_field: str = "text",
) -> Corpus:
    """Every passage of the corpus files and the paragraphs of the multiple-choice files, each text once, without
    any paragraph of ``exclude_paths`` (the items a later fine-tune validates or tests on)."""
    if not corpus_paths and not items_paths:
        raise CorpusError("no corpus: give data.corpus_paths (text) or data.items_paths (multiple-choice files)")
    passages = [p for path in corpus_paths for p in read_corpus(path, text_field)]
    passages += [p for path in items_paths for p in paragraphs_of(path)]
    excluded = {paragraph_key(item) for path in exclude_paths for item in load_items(path)}
    kept, seen, duplicates, held_out = [], set(), 0, 0
    for passage in passages:
        key = paragraph_key(_as_item(passage.text))
        if key in excluded:
            held_out += 1
        elif key in seen:
            duplicates += 1
        else:
            seen.add(key)
            kept.append(passage)
    if not kept:
        raise CorpusError(
            f"no passages left: {len(passages)} read, {held_out} in excluded files, {duplicates} repeated"
        )
    return Corpus(kept, duplicates, held_out)


def _as_item(text: str) -> Item:
    # paragraph_key matches texts that differ only in spacing and punctuation, as the grouped split does.
    return Item(id="", paragraph=text, question="", choices=())


def _decode(path: Path) -> str:
    raw = path.read_bytes()
    try:
        return raw.decode("utf-8-sig")
    except UnicodeDecodeError as err:
        line = raw[: err.start].count(b"\n") + 1
        raise CorpusError(f"{path}:{line}: not valid UTF-8 (byte {err.start}); save the file as UTF-8") from err


def _checked(text: object, where: str, text_field: str, passage_id: object) -> Passage:
    if not isinstance(text, str):
        raise CorpusError(f"{where}: {text_field!r} is {type(text).__name__}, not text")
    if not text.strip():
        raise CorpusError(f"{where}: {text_field!r} is empty")
    return Passage(text.strip(), where, str(passage_id))


def _jsonl(path: Path, text_field: str) -> list[Passage]:
    passages = []
    for number, line in enumerate(jsonl_lines(_decode(path)), start=1):
        if not line.strip():
            continue
        where = f"{path}:{number}"
        try:
            record = json.loads(line)
        except json.JSONDecodeError as err:
            raise CorpusError(f"{where}: not a JSON object ({err.msg})") from err
        if not isinstance(record, dict) or text_field not in record:
            raise CorpusError(f"{where}: no {text_field!r} field (set data.text_field to the field that holds text)")
        passages.append(_checked(record[text_field], where, text_field, record.get("id") or f"{path.stem}-{number}"))
    if not passages:
        raise CorpusError(f"{path}: empty corpus file")
    return passages


def _csv(path: Path, text_field: str) -> list[Passage]:
    reader = csv.DictReader(io.StringIO(_decode(path), newline=""))
    if reader.fieldnames is None:
        raise CorpusError(f"{path}: empty corpus file")
    if text_field not in reader.fieldnames:
        raise CorpusError(f"{path}:1: no {text_field!r} column (columns: {', '.join(reader.fieldnames)})")
    passages = []
    for row in reader:
        # The line where the row ends: a quoted passage may span several lines.
        where = f"{path}:{reader.line_num}"
        passages.append(_checked(row[text_field], where, text_field, row.get("id") or f"{path.stem}-{reader.line_num}"))
    if not passages:
        raise CorpusError(f"{path}: a header and no rows")
    return passages


def _txt(path: Path, passage_id: str | None = None) -> Passage:
    text = _decode(path)
    if not text.strip():
        raise CorpusError(f"{path}: empty text file")
    return Passage(text.strip(), str(path), passage_id or path.stem)


def _text_folder(folder: Path) -> list[Passage]:
    files = sorted(p for p in folder.rglob("*.txt") if p.is_file())
    if not files:
        raise CorpusError(f"{folder}: a corpus folder needs .txt files; none found")
    # Ids are paths inside the folder (a/1, b/1), so files of one name in two subfolders stay apart.
    return [_txt(path, path.relative_to(folder).with_suffix("").as_posix()) for path in files]
