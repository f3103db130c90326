"""Predict throughput: this package's predict path against two baselines, in one run on one loaded model.

All three use the same loaded 4-bit model, the same competition test rows and the same threads:

- the reference system's loop (the 2024 team's inference script): one item at a time, logits for every position,
  the last one read, softmax over the option tokens;
- the strong script a user would write instead: batches of ``--batch-size`` in input order, left-padded, position
  ids that start at each row's first token, ``logits_to_keep=1``, under ``torch.inference_mode``;
- ours: ``Trainer.predict`` with the data module (length-grouped batches, answer-position logits, inference mode),
  tokenization included.

    python benchmarks/predict_speed.py                 # CPU default, a few minutes
    python benchmarks/predict_speed.py --preset qwen2.5-32b --rows 869 --max-length 2048   # on a GPU
"""

from __future__ import annotations

import argparse
import csv
import sys
import tempfile
import time
from pathlib import Path

import lightning as L
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import (  # noqa: E402
    PRESETS,
    add_data_dir_argument,
    append_result,
    cpu_flags,
    fitting_items,
    model_dir,
    predict_trainer,
    set_threads,
    use_preset,
)

from suneung_lit.backbone import BaseSettings, LoraSettings
from suneung_lit.data.cleaning import clean  # noqa: E402
from suneung_lit.data.datamodule import MultipleChoiceDataModule  # noqa: E402
from suneung_lit.data.prompts import load_template, render_prompt  # noqa: E402
from suneung_lit.data.records import load_items, write_items  # noqa: E402
from suneung_lit.data.tokenization import option_token_ids  # noqa: E402
from suneung_lit.module import QLoRAMultipleChoice  # noqa: E402
from suneung_lit.writer import PredictionCSVWriter  # noqa: E402


def baseline_predict(model, tokenizer, items, template, option_ids) -> list[int]:
    """One item at a time, logits for every position, the last one read."""
    predictions = []
    with torch.no_grad():
        for item in items:
            encoded = tokenizer(render_prompt(item, template, tokenizer), return_tensors="pt").to(model.device)
            logits = model(**encoded).logits  # [1, length, vocab]
            last = logits[0, -1]
            scores = last[option_ids[: item.num_choices]]
            predictions.append(int(torch.softmax(scores.float(), -1).argmax()) + 1)
    return predictions


def strong_baseline_predict(model, tokenizer, items, template, option_ids, batch_size: int) -> list[int]:
    """Batched in input order, left-padded, the head applied to the last position only."""
    from suneung_lit.backbone import position_ids_for_left_padding

    tokenizer.padding_side = "left"
    predictions = []
    with torch.inference_mode():
        for start in range(0, len(items), batch_size):
            batch = items[start : start + batch_size]
            prompts = [render_prompt(item, template, tokenizer) for item in batch]
            encoded = tokenizer(prompts, return_tensors="pt", padding=True).to(model.device)
            positions = position_ids_for_left_padding(encoded["attention_mask"])
            logits = model(**encoded, position_ids=positions, logits_to_keep=1).logits[:, -1]
            for item, row in zip(batch, logits, strict=True):
                predictions.append(int(row[option_ids[: item.num_choices]].float().argmax()) + 1)
    return predictions


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=96, help="first N competition test rows that fit max-length")
    parser.add_argument("--hidden", type=int, default=128)
    parser.add_argument("--layers", type=int, default=2)
    parser.add_argument("--max-length", type=int, default=1024)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument(
        "--tokens-per-batch", type=int, help="a padded-token budget per batch instead of --batch-size rows"
    )
    parser.add_argument("--warmup-rows", type=int, default=16, help="rows of the untimed first pass")
    parser.add_argument("--quantization", default="nf4", choices=["nf4", "fp4", "int8", "none"])
    parser.add_argument("--preset", choices=sorted(PRESETS), help="a Qwen2.5 shape with random 4-bit weights")
    parser.add_argument(
        "--skip-baseline", action="store_true", help="time ours only (a 32B batch-1 baseline takes hours)"
    )
    add_data_dir_argument(parser)
    args = parser.parse_args()
    threads = set_threads()
    path = model_dir(args.hidden, args.layers)
    accelerator = "gpu" if torch.cuda.is_available() else "cpu"
    dtype = "bfloat16" if accelerator == "gpu" else "float32"

    module = QLoRAMultipleChoice(
        str(path),
        base=BaseSettings(quantization=args.quantization, compute_dtype=dtype, dtype=dtype),
        lora=LoraSettings(dropout=0.0),
    )
    use_preset(module, args.preset, dtype)
    with tempfile.TemporaryDirectory() as scratch:
        scratch = Path(scratch)
        probe = MultipleChoiceDataModule(str(path), predict_path=str(args.data_dir / "test.csv"))
        tokenizer = probe._load_tokenizer()
        template = load_template("base")
        items, _ = clean(load_items(args.data_dir / "test.csv"), allow_drops=False)
        # Only rows that fit, so both sides see exactly the same text.
        subset = fitting_items(items, tokenizer, args.max_length, limit=args.rows)
        write_items(subset, scratch / "subset.csv")
        write_items(subset[: args.warmup_rows], scratch / "warmup.csv")

        def trainer() -> L.Trainer:
            return predict_trainer([PredictionCSVWriter(str(scratch / "out"))])

        def datamodule(cache: str, rows: str = "subset.csv") -> MultipleChoiceDataModule:
            data = MultipleChoiceDataModule(
                str(path),
                predict_path=str(scratch / rows),
                max_length=args.max_length,
                eval_batch_size=args.batch_size,
                eval_tokens_per_batch=args.tokens_per_batch,
                cache_dir=str(scratch / cache),
            )
            data.tokenizer = tokenizer  # both sides start with the tokenizer loaded
            return data

        # Not timed: loads the model, compiles kernels. A few rows: a 32B pass over all rows takes minutes.
        trainer().predict(module, datamodule("warmup", "warmup.csv"))
        start = time.perf_counter()
        trainer().predict(module, datamodule("timed"))  # tokenization included, cold cache
        if accelerator == "gpu":
            torch.cuda.synchronize()
        ours_seconds = time.perf_counter() - start
        with open(scratch / "out" / "predictions.csv", encoding="utf-8") as handle:
            ours = [int(row["answer"]) for row in csv.DictReader(handle)]

        if args.skip_baseline:
            baseline, baseline_seconds = ours, float("nan")
            strong, strong_seconds = ours, float("nan")
        else:
            model = module.model.eval()
            option_ids = option_token_ids(tokenizer, 5)
            baseline_predict(model, tokenizer, subset[:2], template, option_ids)  # warm-up
            start = time.perf_counter()
            baseline = baseline_predict(model, tokenizer, subset, template, option_ids)
            baseline_seconds = time.perf_counter() - start
            strong_baseline_predict(model, tokenizer, subset[:2], template, option_ids, args.batch_size)  # warm-up
            start = time.perf_counter()
            strong = strong_baseline_predict(model, tokenizer, subset, template, option_ids, args.batch_size)
            strong_seconds = time.perf_counter() - start

    label = args.preset or f"h{args.hidden} l{args.layers}"
    ours_rate, baseline_rate = len(subset) / ours_seconds, len(subset) / baseline_seconds
    strong_rate = len(subset) / strong_seconds
    speedup = ours_rate / baseline_rate
    same = (
        "no baseline"
        if args.skip_baseline
        else "identical"
        if ours == baseline
        else f"differ ({sum(a != b for a, b in zip(ours, baseline, strict=True))} items)"
    )
    if torch.cuda.is_available():
        print(f"peak GPU memory {torch.cuda.max_memory_allocated() / 2**30:.1f} GiB")
    print(f"items: {len(subset)} competition test rows, model {label} {args.quantization}, {threads} threads")
    print(f"{'path':<28}{'seconds':>10}{'items/s':>10}")
    print(f"{'reference loop (batch 1)':<28}{baseline_seconds:>10.2f}{baseline_rate:>10.2f}")
    print(f"{'strong script (batched)':<28}{strong_seconds:>10.2f}{strong_rate:>10.2f}")
    print(f"{'suneung-lit predict':<28}{ours_seconds:>10.2f}{ours_rate:>10.2f}")
    strong_same = "-" if args.skip_baseline else f"{sum(a != b for a, b in zip(ours, strong, strict=True))} differ"
    append_result(
        "predict throughput against both baselines",
        ["model", "items", "max_length", "batch", "reference loop items/s", "strong script items/s",
         "ours items/s", "vs reference", "vs strong", "predictions vs reference", "predictions vs strong", "machine"],
        [f"{label} {args.quantization}", len(subset), args.max_length,
         f"{args.tokens_per_batch} tokens" if args.tokens_per_batch else args.batch_size,
         f"{baseline_rate:.2f}", f"{strong_rate:.2f}", f"{ours_rate:.2f}", f"{speedup:.1f}x",
         f"{ours_rate / strong_rate:.2f}x", same, strong_same, f"{threads} threads, {cpu_flags()}"],
    )  # fmt: skip
    print(f"speedup={speedup:.2f} predictions={'identical' if ours == baseline else 'differ'}")


if __name__ == "__main__":
    main()
