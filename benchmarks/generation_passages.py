"""Passages for measuring ``python -m suneung_lit.data generate``: reading (KLUE-MRC) paragraphs from the training
side of the accuracy harness's split that its fine-tunes do not use, so that items written from them can join a
fine-tune that is then scored on the harness's held-out items (no held-out passage is ever written from).

    python benchmarks/generation_passages.py --model artifacts/qwen2.5-coder-1.5b-instruct --count 50 \\
        --output generated/passages.jsonl
    python -m suneung_lit.data generate generated/passages.jsonl --model artifacts/qwen2.5-coder-1.5b-instruct \\
        --output generated/qwen1.5b --test ../shared/data/generationfornlp/test.csv

The split, the token limit and the training items skipped (``--skip-train``, per source, the first that fit) are
those of ``accuracy.py --mode qwen-cpu --max-train 160``: the 320-item fine-tune's reading items come first on the
training side, so the passages start after them.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import COMPETITION, READING, fitting_items, with_source  # noqa: E402

from suneung_lit.data.cleaning import clean  # noqa: E402
from suneung_lit.data.records import load_items  # noqa: E402
from suneung_lit.data.splitting import grouped_split  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", required=True, help="the tokenizer that decides which items fit")
    parser.add_argument("--data-dir", default=str(COMPETITION))
    parser.add_argument("--max-tokens", type=int, default=1024)
    parser.add_argument("--val-fraction", type=float, default=0.15)
    parser.add_argument("--split-seed", type=int, default=42)
    parser.add_argument("--skip-train", type=int, default=160, help="fitting training items the fine-tunes use")
    parser.add_argument("--count", type=int, default=50)
    parser.add_argument("--output", type=Path, required=True)
    args = parser.parse_args()
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(args.model)
    cleaned, _ = clean(load_items(Path(args.data_dir) / "train.csv"))
    reading = [item for item in map(with_source, cleaned) if item.metadata["source"] == READING]
    train, _ = grouped_split(reading, args.val_fraction, args.split_seed)
    fitting = fitting_items(train, tokenizer, args.max_tokens)
    used = {item.paragraph for item in fitting[: args.skip_train]}
    passages, seen = [], set(used)
    for item in fitting[args.skip_train :]:
        if item.paragraph not in seen:
            seen.add(item.paragraph)
            passages.append({"id": item.id, "text": item.paragraph})
    if len(passages) < args.count:
        raise SystemExit(f"only {len(passages)} unused training paragraphs fit; ask for fewer")
    args.output.parent.mkdir(parents=True, exist_ok=True)
    with open(args.output, "w", encoding="utf-8") as handle:
        for passage in passages[: args.count]:
            handle.write(json.dumps(passage, ensure_ascii=False) + "\n")
    print(f"wrote {args.count} passages to {args.output} ({len(passages)} available, {len(used)} skipped)")


if __name__ == "__main__":
    main()
