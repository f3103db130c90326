"""Data pipeline: validate + clean + tokenize the full competition train set, cold cache and cached.

python benchmarks/data_pipeline.py [--max-length 1024] [--template base]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import add_data_dir_argument, append_result, model_dir  # noqa: E402

from suneung_lit.data.cleaning import clean  # noqa: E402
from suneung_lit.data.prompts import load_template  # noqa: E402
from suneung_lit.data.records import load_items  # noqa: E402
from suneung_lit.data.tokenization import encode_items, encoding_stats  # noqa: E402


def pipeline(tokenizer, cache: Path, max_length: int, template: str, data_dir: Path) -> tuple[float, int, int]:
    start = time.perf_counter()
    items, _ = clean(load_items(data_dir / "train.csv"))
    dataset = encode_items(items, tokenizer, load_template(template), max_length, 5, cache)
    seconds = time.perf_counter() - start
    return seconds, len(dataset), len(encoding_stats(dataset).shortened_ids)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--max-length", type=int, default=1024)
    parser.add_argument("--template", default="base")
    add_data_dir_argument(parser)
    args = parser.parse_args()
    from transformers import AutoTokenizer

    path = model_dir(128, 2)  # built on first use; not part of the timing
    start = time.perf_counter()
    tokenizer = AutoTokenizer.from_pretrained(path)
    load_seconds = time.perf_counter() - start
    with tempfile.TemporaryDirectory() as cache:
        cold, rows, shortened = pipeline(tokenizer, Path(cache), args.max_length, args.template, args.data_dir)
        cached, _, _ = pipeline(tokenizer, Path(cache), args.max_length, args.template, args.data_dir)
    print(f"train rows: {rows} ({shortened} shortened to {args.max_length} tokens)")
    print(f"tokenizer load: {load_seconds:.1f} s")
    print(f"validate + clean + tokenize: cold {cold:.2f} s, cached {cached:.2f} s")
    append_result(
        "data pipeline (full train set)",
        ["rows", "max_length", "shortened", "cold s", "cached s", "tokenizer load s"],
        [rows, args.max_length, shortened, f"{cold:.2f}", f"{cached:.2f}", f"{load_seconds:.1f}"],
    )
    print(f"cold_seconds={cold:.2f} cached_seconds={cached:.2f}")


if __name__ == "__main__":
    main()
