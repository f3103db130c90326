"""Export labelled items for other evaluation tools.

    python -m suneung_lit.export lm-eval DATA --output DIR --model MODEL_DIR [--template base] [--task NAME]

DATA is any file ``validate`` reads (the competition CSV, our flat CSV/JSONL, or the output of
``python -m suneung_lit.data convert`` for KMMLU, CLIcK, CSAT-QA or KICE). The items are loaded, cleaned and
rendered by the same data module as ``test``, with MODEL_DIR's tokenizer and chat template.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from suneung_lit.data.records import DataValidationError


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m suneung_lit.export", description=__doc__.split("\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    lm_eval = commands.add_parser("lm-eval", help="a task folder for lm-evaluation-harness (--include_path)")
    lm_eval.add_argument("data", type=Path, help="labelled items (CSV or JSONL)")
    lm_eval.add_argument("--output", type=Path, required=True, help="task folder to write")
    lm_eval.add_argument("--model", required=True, help="base model folder: its tokenizer renders the prompts")
    lm_eval.add_argument("--template", default="base", help="prompt template, as data.template (default: base)")
    lm_eval.add_argument("--chat-template", default=None, help="as data.chat_template: 'plain' or a Jinja file")
    lm_eval.add_argument("--max-length", type=int, default=2048, help="as data.max_length (default: 2048)")
    lm_eval.add_argument("--answer-column", default=None, help="as data.answer_column")
    lm_eval.add_argument("--task", default=None, help="task name (default: suneung_lit_<file stem>)")
    args = parser.parse_args(argv)
    try:
        return export_lm_eval(args)
    except DataValidationError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2


def export_lm_eval(args: argparse.Namespace) -> int:
    import re

    from suneung_lit.data.datamodule import MultipleChoiceDataModule
    from suneung_lit.export.lm_eval import documents, write_task

    data = MultipleChoiceDataModule(
        args.model,
        test_path=str(args.data),
        template=args.template,
        chat_template=args.chat_template,
        max_length=args.max_length,
        answer_column=args.answer_column,
    )
    data.setup("test")  # the checks, loading and cleaning of `test`: labelled items, scored as validate does
    task = args.task or "suneung_lit_" + re.sub(r"\W+", "_", args.data.stem).strip("_").lower()
    docs = documents(data.items["test"], data.template, data.tokenizer, args.max_length)
    data_file, config = write_task(docs, args.output, task)
    print(f"wrote {len(docs)} items to {data_file} and task {task!r} to {config}")
    print(f"run: lm_eval --model hf --model_args pretrained={args.model} --include_path {args.output} --tasks {task}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
