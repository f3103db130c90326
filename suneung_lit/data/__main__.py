"""Data commands: ``python -m suneung_lit.data check|convert|augment|merge|overlap|split|generate ...``.

``check`` validates files and prints a summary; it exits 0 when every file is valid and 2 with the list of
problems otherwise. The other commands write flat CSV files (atomically) and print what they did; each is a thin
wrapper over a function in ``suneung_lit.data`` that can be called from Python.
"""

from __future__ import annotations

import argparse
import statistics
import sys
from collections import Counter
from pathlib import Path

from suneung_lit.atomic_write import write_atomically
from suneung_lit.data.records import DEFAULT_MAX_CHOICES, DataValidationError, Item, answers_elsewhere, load_items


def _histogram(counter: Counter) -> str:
    return ", ".join(f"{key}: {counter[key]}" for key in sorted(counter, key=lambda k: (k is None, k)))


def _percentile(values: list[int], fraction: float) -> int:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(fraction * (len(ordered) - 1))))]


# Without --max-length nothing is shortened and no item fails on length; the lengths are reported.
NO_LIMIT = 1 << 30


def summarize(
    path: Path,
    items: list[Item],
    tokenizer,
    template: str,
    max_length: int | None,
    max_choices: int,
    few_shot: tuple[int, list[Item], str] | None = None,
) -> str:
    """Counts and prompt-token statistics of a file; ``few_shot`` (K, pool, selection) counts each prompt with the
    K examples ``data.few_shot`` would put before it (seed 42, the data module's default)."""
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
        if few_shot:
            from suneung_lit.data.few_shot import with_examples

            count, pool, selection = few_shot
            cleaned = with_examples(cleaned, pool, count, selection, seed=42)
            template_label = f"{template}, {count} examples ({selection})"
        limit = max_length or NO_LIMIT
        stats = encoding_stats(encode_items(cleaned, tokenizer, load_template(template), limit, max_choices))
        lengths = list(stats.prompt_lengths)
        lines.append(
            f"  prompt tokens ({template_label if few_shot else template}): min {min(lengths)}, "
            f"median {int(statistics.median(lengths))}, "
            f"p95 {_percentile(lengths, 0.95)}, max {max(lengths)}"
        )
        for cutoff in (1024, 2048, 4096):
            lines.append(f"  over {cutoff} tokens: {sum(n > cutoff for n in lengths)}")
        if max_length:
            cut = "examples dropped or paragraph " if few_shot else ""
            lines.append(f"  {cut}shortened to fit {max_length}: {len(stats.shortened_ids)}")
    return "\n".join(lines)


def check(args: argparse.Namespace) -> int:
    tokenizer = None
    if args.tokenizer:
        from transformers import AutoTokenizer

        tokenizer = AutoTokenizer.from_pretrained(args.tokenizer)
    few_shot = None
    if args.few_shot:
        pool = load_items(args.few_shot_from, args.max_choices) if args.few_shot_from else None
        if pool is None:
            print("check --few-shot needs --few-shot-from FILE (the pool: data.few_shot_path or the train file)")
            return 2
        few_shot = (args.few_shot, pool, args.few_shot_selection)
    failed = False
    for path in args.paths:
        try:
            items = load_items(path, args.max_choices, answer_column=args.answer_column)
        except DataValidationError as err:
            print(err, file=sys.stderr)
            failed = True
            continue
        try:
            print(summarize(path, items, tokenizer, args.template, args.max_length, args.max_choices, few_shot))
            if args.corrections:
                print("\n".join(correction_lines(items, args.corrections)))
            elsewhere = answers_elsewhere(items) if not args.answer_column else None
            if elsewhere:
                print(
                    f"  note: column {elsewhere!r} holds answer numbers; pass --answer-column {elsewhere} to use them"
                )
        except DataValidationError as err:
            print(err, file=sys.stderr)
            failed = True
    return 2 if failed else 0


def correction_lines(items: list[Item], path: Path) -> list[str]:
    """What a corrections file does to these items, one line each; its values are validated as training would."""
    from suneung_lit.data.cleaning import apply_corrections, describe_corrections, load_corrections

    corrections = load_corrections(path)
    known = {item.id for item in items}
    here = [c for c in corrections if c.id in known]
    apply_corrections(items, here, str(path))
    lines = [f"  corrections ({path}): {len(here)} apply"]
    lines += [f"    {line}" for line in describe_corrections(items, here)]
    if len(here) < len(corrections):
        lines.append(f"    {len(corrections) - len(here)} correction(s) name ids not in this file")
    return lines


def _load_all(paths: list[Path]) -> list[Item]:
    from suneung_lit.data.records import load_many

    return load_many(paths)


def convert_command(args: argparse.Namespace) -> int:
    from suneung_lit.data.converters import convert
    from suneung_lit.data.records import write_items

    conversion = convert(args.format, args.inputs, zero_based=args.zero_based)
    if conversion.problems and not args.skip_invalid:
        print(DataValidationError(conversion.problems[:50], len(conversion.problems)), file=sys.stderr)
        print("nothing written; fix the records or pass --skip-invalid", file=sys.stderr)
        return 2
    write_items(conversion.items, args.output)
    print(f"wrote {len(conversion.items)} items to {args.output}")
    if conversion.rejected:
        import json

        rejects = args.output.with_name(args.output.stem + ".rejects.jsonl")
        lines = [json.dumps(r, ensure_ascii=False, default=str) for r in conversion.rejected]
        write_atomically(rejects, "\n".join(lines) + "\n")
        print(f"rejected {len(conversion.rejected)} record(s), listed in {rejects}")
    return 0


def augment_command(args: argparse.Namespace) -> int:
    from suneung_lit.data.augmenting import balance_answers, shuffle_choices
    from suneung_lit.data.records import write_items

    items = _load_all(args.inputs)
    if args.balance:
        items = balance_answers(items, args.seed)
    if args.shuffle_choices:
        items = shuffle_choices(items, args.shuffle_choices, args.seed)
    write_items(items, args.output)
    print(f"wrote {len(items)} items to {args.output}; answers: {_histogram(Counter(i.answer for i in items))}")
    return 0


def merge_command(args: argparse.Namespace) -> int:
    from dataclasses import replace

    from suneung_lit.data.matching import merge
    from suneung_lit.data.records import write_items

    sources = []
    for path in args.inputs:
        items = load_items(path)
        sources.append((path.name, [replace(i, metadata={"source": path.stem, **i.metadata}) for i in items]))
    kept, removed = merge(sources)
    write_items(kept, args.output)
    print(f"wrote {len(kept)} items to {args.output}; removed {len(removed)} duplicate(s)")
    for entry in removed:
        print(f"  removed {entry.id} ({entry.source}): same as {entry.kept_id} ({entry.kept_source})")
    return 0


def overlap_command(args: argparse.Namespace) -> int:
    from suneung_lit.data.matching import find_overlap

    found = find_overlap(load_items(args.train), load_items(args.test), args.threshold, args.shingle)
    print(f"{len({o.test_id for o in found})} test item(s) overlap the training file (threshold {args.threshold})")
    for entry in found:
        print(f"  {entry.test_id} ~ {entry.train_id}  {entry.field}  similarity {entry.similarity:.3f}")
    return 0


def split_command(args: argparse.Namespace) -> int:
    from suneung_lit.data.records import write_items
    from suneung_lit.data.splitting import grouped_split

    train, val = grouped_split(load_items(args.input), args.val_fraction, args.seed)
    write_items(train, args.train_output)
    write_items(val, args.val_output)
    print(f"train {len(train)} -> {args.train_output}; val {len(val)} -> {args.val_output}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m suneung_lit.data", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    check_parser = commands.add_parser("check", help="validate files and print a summary")
    check_parser.add_argument("paths", nargs="+", type=Path)
    check_parser.add_argument("--tokenizer", help="tokenizer folder or hub name for token-length statistics")
    check_parser.add_argument("--template", default="base")
    check_parser.add_argument(
        "--max-length", type=int, default=None, help="shorten to this many tokens; fail on items that cannot fit"
    )
    check_parser.add_argument("--max-choices", type=int, default=DEFAULT_MAX_CHOICES)
    check_parser.add_argument("--few-shot", type=int, default=0, metavar="K", help="count K examples in each prompt")
    check_parser.add_argument("--few-shot-from", type=Path, help="the examples' pool (data.few_shot_path or train)")
    check_parser.add_argument("--few-shot-selection", choices=["random", "bm25"], default="random")
    check_parser.add_argument("--answer-column", help="read answers from this column (e.g. answer_true)")
    check_parser.add_argument("--corrections", type=Path, help="a corrections CSV: report each fix it applies")
    check_parser.set_defaults(run=check)

    from suneung_lit.data.converters import CONVERTERS

    convert_parser = commands.add_parser("convert", help="convert a public data set to the flat schema")
    convert_parser.add_argument("inputs", nargs="+", type=Path)
    convert_parser.add_argument("--format", required=True, choices=sorted(CONVERTERS))
    convert_parser.add_argument("--output", required=True, type=Path)
    convert_parser.add_argument("--zero-based", action="store_true", help="flat files whose answers start at 0")
    convert_parser.add_argument("--skip-invalid", action="store_true", help="write good records, list the rest")
    convert_parser.set_defaults(run=convert_command)

    augment_parser = commands.add_parser("augment", help="add choice-permuted copies / balance answer positions")
    augment_parser.add_argument("inputs", nargs="+", type=Path)
    augment_parser.add_argument("--output", required=True, type=Path)
    augment_parser.add_argument("--shuffle-choices", type=int, default=0, metavar="K", help="K permuted copies")
    augment_parser.add_argument("--balance", action="store_true", help="make answer positions uniform")
    augment_parser.add_argument("--seed", type=int, default=0)
    augment_parser.set_defaults(run=augment_command)

    merge_parser = commands.add_parser("merge", help="concatenate files, removing duplicates across them")
    merge_parser.add_argument("inputs", nargs="+", type=Path)
    merge_parser.add_argument("--output", required=True, type=Path)
    merge_parser.set_defaults(run=merge_command)

    overlap_parser = commands.add_parser("overlap", help="report test items that occur in a training file")
    overlap_parser.add_argument("train", type=Path)
    overlap_parser.add_argument("test", type=Path)
    overlap_parser.add_argument("--threshold", type=float, default=0.8, help="character n-gram Jaccard")
    overlap_parser.add_argument("--shingle", type=int, default=5, help="n of the character n-grams")
    overlap_parser.set_defaults(run=overlap_command)

    split_parser = commands.add_parser("split", help="paragraph-grouped, answer-stratified train/val split")
    split_parser.add_argument("input", type=Path)
    split_parser.add_argument("--train-output", required=True, type=Path)
    split_parser.add_argument("--val-output", required=True, type=Path)
    split_parser.add_argument("--val-fraction", type=float, default=0.1)
    split_parser.add_argument("--seed", type=int, default=42)
    split_parser.set_defaults(run=split_command)

    # The writer and judge are models; their code lives on the model side (suneung_lit.itemgen) and loads on use.
    generate_parser = commands.add_parser("generate", help="a language model writes items from passages, filtered")
    from suneung_lit.itemgen.run import add_arguments

    add_arguments(generate_parser)
    generate_parser.set_defaults(run=generate_command)
    return parser


def generate_command(args: argparse.Namespace) -> int:
    from suneung_lit.itemgen.run import command

    return command(args)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.run(args)
    except DataValidationError as err:
        print(err, file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
