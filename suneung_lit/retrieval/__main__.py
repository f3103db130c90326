"""``python -m suneung_lit.retrieval index|retrieve|raft ...``: offline retrieval for support passages.

index     CORPUS... --output DIR         passages from .jsonl/.csv/.tsv files or folders of .txt, BM25 (+ dense)
retrieve  DATA --index DIR --output F    the data file with ``support`` and ``support_ids`` columns added
raft      DATA --index DIR --output F    RAFT training data: oracle passage among distractors for a fraction

Exits 0 on success and 2 with a message naming the file (row, column) on bad input.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from suneung_lit.data.records import DataValidationError, load_items, write_items
from suneung_lit.retrieval.analysis import ANALYZERS, MissingRetrievalDependency
from suneung_lit.retrieval.corpus import CorpusError, read_passages
from suneung_lit.retrieval.index import METHODS, RetrievalIndex, RetrievalIndexError, build_index
from suneung_lit.retrieval.raft import build_raft_items
from suneung_lit.retrieval.support import (
    DEFAULT_QUERY_FIELDS,
    DEFAULT_SEPARATOR,
    QUERY_FIELDS,
    retrieve_for_items,
    with_support,
)


def _folder_size(folder: Path) -> int:
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file())


def index_command(args: argparse.Namespace) -> int:
    started = time.perf_counter()
    passages, report = read_passages(args.corpus, args.text_field, args.chunk_chars, args.overlap)
    for line in report.lines():
        print(line)
    manifest = build_index(
        passages,
        args.output,
        analyzer=args.analyzer,
        dense_model=args.dense_model,
        overwrite=args.overwrite,
        extra={"chunk_chars": args.chunk_chars, "overlap": args.overlap, "sources": [str(p) for p in args.corpus]},
    )
    if manifest["passages_without_terms"]:
        print(f"passages without index terms (never retrieved by BM25): {manifest['passages_without_terms']}")
    seconds = time.perf_counter() - started
    size = _folder_size(args.output) / 2**20
    print(f"wrote {args.output}: {manifest['passages']} passages, {size:.1f} MiB, {seconds:.1f} s ({args.analyzer})")
    return 0


def unescape(separator: str) -> str:
    """``\\n`` and ``\\t`` typed on a command line become a newline and a tab; any other text stays as it is."""
    return separator.replace("\\n", "\n").replace("\\t", "\t")


def _query_fields(text: str) -> tuple[str, ...]:
    fields = tuple(f.strip() for f in text.split(",") if f.strip())
    unknown = [f for f in fields if f not in QUERY_FIELDS]
    if unknown or not fields:
        raise argparse.ArgumentTypeError(f"choose from {', '.join(QUERY_FIELDS)} (comma separated)")
    return fields


def retrieve_command(args: argparse.Namespace) -> int:
    items = load_items(args.data, answer_column=args.answer_column)
    if any("support" in item.metadata for item in items):
        print(f"note: {args.data} already has a support column; it is replaced")
    index = RetrievalIndex(args.index, dense_model=args.dense_model)
    started = time.perf_counter()
    hits = retrieve_for_items(items, index, args.top_k, args.query_fields, args.method, not args.keep_paragraph)
    seconds = time.perf_counter() - started
    write_items(with_support(items, hits, unescape(args.separator)), args.output)
    short = sum(1 for h in hits if len(h) < args.top_k)
    print(
        f"wrote {args.output}: {len(items)} rows, top {args.top_k} by {args.method}, "
        f"{len(items) / seconds:.1f} queries/s"
    )
    if short:
        print(f"rows with fewer than {args.top_k} passages (index too small after exclusions): {short}")
    return 0


def raft_command(args: argparse.Namespace) -> int:
    items = load_items(args.data, answer_column=args.answer_column)
    index = RetrievalIndex(args.index, dense_model=args.dense_model)
    out, report = build_raft_items(items, index, args.k, args.oracle_fraction, args.seed, args.method)
    write_items(out, args.output)
    print(
        f"wrote {args.output}: {report.items} rows, oracle among {args.k} passages for {report.with_oracle} "
        f"({report.oracle_from_column} oracles from the oracle_id column), distractors only for "
        f"{report.items - report.with_oracle}"
    )
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m suneung_lit.retrieval",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    commands = parser.add_subparsers(dest="command", required=True)

    index = commands.add_parser("index", help="build an index from corpus files")
    index.add_argument("corpus", nargs="+", type=Path, help=".jsonl/.csv/.tsv files or folders of .txt files")
    index.add_argument("--output", type=Path, required=True)
    index.add_argument("--text-field", default="text", help="field/column holding the text (default: text)")
    index.add_argument("--chunk-chars", type=int, default=700, help="passage length in characters (default: 700)")
    index.add_argument("--overlap", type=int, default=150, help="characters shared by neighbouring passages")
    index.add_argument("--analyzer", choices=ANALYZERS, default="kiwi", help="BM25 terms (default: kiwi morphemes)")
    index.add_argument("--dense-model", type=Path, help="local sentence-transformers folder: also embed passages")
    index.add_argument("--overwrite", action="store_true", help="replace an existing index folder")
    index.set_defaults(run=index_command)

    for name, run, help_text in (
        ("retrieve", retrieve_command, "add top-k support passages to a data file"),
        ("raft", raft_command, "build RAFT training data (oracle passage among distractors)"),
    ):
        sub = commands.add_parser(name, help=help_text)
        sub.add_argument("data", type=Path, help="a data file (competition or flat CSV, JSONL)")
        sub.add_argument("--index", type=Path, required=True)
        sub.add_argument("--output", type=Path, required=True, help="flat CSV to write (every input row)")
        sub.add_argument("--method", choices=METHODS, default="bm25")
        sub.add_argument("--dense-model", type=Path, help="encoder folder, if not where the index was built")
        sub.add_argument("--answer-column", help="read answers from this column (e.g. answer_true)")
        sub.set_defaults(run=run)
        if name == "retrieve":
            sub.add_argument("--top-k", type=int, default=3)
            sub.add_argument(
                "--query-fields",
                type=_query_fields,
                default=DEFAULT_QUERY_FIELDS,
                help=f"item fields sent as the query, from {','.join(QUERY_FIELDS)} (default: question,choices)",
            )
            sub.add_argument(
                "--separator",
                default=DEFAULT_SEPARATOR.replace("\n", "\\n"),
                help="between passages in the support column (escapes like \\n work)",
            )
            sub.add_argument(
                "--keep-paragraph",
                action="store_true",
                help="keep passages whose text is already inside the item's paragraph",
            )
        else:
            sub.add_argument("--k", type=int, default=4, help="passages per item (default: 4)")
            sub.add_argument("--oracle-fraction", type=float, default=0.8, help="items whose oracle is included")
            sub.add_argument("--seed", type=int, default=0)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.run(args)
    except (CorpusError, DataValidationError, RetrievalIndexError, MissingRetrievalDependency, ValueError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
