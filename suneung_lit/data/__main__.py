"""Data commands: ``python -m suneung_lit.data check PATH... [--tokenizer DIR_OR_NAME]``.

``check`` validates files and prints a summary; it exits 0 when every file is valid and 2 with the list of
problems otherwise.
"""

from __future__ import annotations

import argparse
import statistics
import sys
from collections import Counter
from pathlib import Path

from suneung_lit.data.records import DEFAULT_MAX_CHOICES, DataValidationError, Item, load_items


def _histogram(counter: Counter) -> str:
    return ", ".join(f"{key}: {counter[key]}" for key in sorted(counter, key=lambda k: (k is None, k)))


def _percentile(values: list[int], fraction: float) -> int:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(fraction * (len(ordered) - 1))))]


def summarize(path: Path, items: list[Item], tokenizer, template: str, max_length: int, max_choices: int) -> str:
    lines = [
        f"{path}",
        f"  rows: {len(items)}",
        f"  choices: {_histogram(Counter(i.num_choices for i in items))}",
        f"  answers: {_histogram(Counter(i.answer if i.answer is not None else 'none' for i in items))}",
        f"  with question_plus: {sum(1 for i in items if i.question_plus.strip())}",
    ]
    if tokenizer is not None and items:
        from suneung_lit.data.cleaning import clean
        from suneung_lit.data.prompts import load_template
        from suneung_lit.data.tokenization import encode_items, encoding_stats

        cleaned, _ = clean(items, allow_drops=False)
        stats = encoding_stats(encode_items(cleaned, tokenizer, load_template(template), max_length, max_choices))
        lengths = list(stats.prompt_lengths)
        lines += [
            f"  prompt tokens ({template}): min {min(lengths)}, median {int(statistics.median(lengths))}, "
            f"p95 {_percentile(lengths, 0.95)}, max {max(lengths)}",
            f"  shortened to fit {max_length}: {len(stats.shortened_ids)}",
        ]
    return "\n".join(lines)


def check(args: argparse.Namespace) -> int:
    tokenizer = None
    if args.tokenizer:
        from transformers import AutoTokenizer

        tokenizer = AutoTokenizer.from_pretrained(args.tokenizer)
    failed = False
    for path in args.paths:
        try:
            items = load_items(path, args.max_choices)
        except DataValidationError as err:
            print(err, file=sys.stderr)
            failed = True
            continue
        try:
            print(summarize(path, items, tokenizer, args.template, args.max_length, args.max_choices))
        except DataValidationError as err:
            print(err, file=sys.stderr)
            failed = True
    return 2 if failed else 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m suneung_lit.data", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    check_parser = commands.add_parser("check", help="validate files and print a summary")
    check_parser.add_argument("paths", nargs="+", type=Path)
    check_parser.add_argument("--tokenizer", help="tokenizer folder or hub name for token-length statistics")
    check_parser.add_argument("--template", default="base")
    check_parser.add_argument("--max-length", type=int, default=1024)
    check_parser.add_argument("--max-choices", type=int, default=DEFAULT_MAX_CHOICES)
    check_parser.set_defaults(run=check)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return args.run(args)


if __name__ == "__main__":
    sys.exit(main())
