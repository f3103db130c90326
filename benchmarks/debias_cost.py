"""Debiasing cost: forward passes per item and items/s of predict under each ``model.debias``, in one run.

All modes score the same competition test rows with the same loaded model through ``Trainer.predict``;
``offsets`` costs what ``none`` costs (one pass) and is left out. The prediction agreement with ``none`` is
printed too (how many items each debiasing changes).

    python benchmarks/debias_cost.py                                   # Gemma 3 270M on the CPU, ~5 minutes
    python benchmarks/debias_cost.py --model artifacts/tiny-qwen2 --rows 200
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import lightning as L
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import COMPETITION, ROOT, append_result, fitting_items, set_threads  # noqa: E402

from suneung_lit.data.datamodule import MultipleChoiceDataModule  # noqa: E402
from suneung_lit.data.records import load_items, write_items  # noqa: E402
from suneung_lit.module import QLoRAMultipleChoice  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default=str(ROOT / "artifacts" / "gemma-3-270m"))
    parser.add_argument("--data", default=str(COMPETITION / "test.csv"))
    parser.add_argument("--rows", type=int, default=40, help="first N rows that fit --max-length")
    parser.add_argument("--max-length", type=int, default=448)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--quantization", default="none", choices=["none", "nf4"])
    args = parser.parse_args()
    threads = set_threads()
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(args.model)
    items = fitting_items(load_items(args.data), tokenizer, args.max_length, limit=args.rows)
    dtype = "float32" if not torch.cuda.is_available() else "bfloat16"
    module = QLoRAMultipleChoice(args.model, quantization=args.quantization, compute_dtype=dtype, dtype=dtype)
    results = {}
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "items.csv"
        write_items(items, path)
        for mode in ("none", "pride", "cyclic"):
            module.hparams.debias = mode
            datamodule = MultipleChoiceDataModule(
                args.model,
                predict_path=str(path),
                max_length=args.max_length,
                eval_batch_size=args.batch_size,
                cache_dir=str(Path(folder) / "cache"),
                debias=mode,
            )
            trainer = L.Trainer(accelerator="auto", devices=1, logger=False, enable_progress_bar=False)
            started = time.perf_counter()
            outputs = trainer.predict(module, datamodule=datamodule)
            seconds = time.perf_counter() - started
            predictions = {i: int(p) for b in outputs for i, p in zip(b["id"], b["prediction"], strict=True)}
            passes = len(datamodule.encoded["predict"]) / len(items)
            results[mode] = (passes, len(items) / seconds, predictions)
    base = results["none"][2]
    print(f"\n{Path(args.model).name}, {len(items)} rows <= {args.max_length} tokens, {threads} threads")
    print("mode    passes/item  items/s  changed vs none")
    for mode, (passes, rate, predictions) in results.items():
        changed = sum(predictions[i] != base[i] for i in base)
        print(f"{mode:7s} {passes:11.2f} {rate:8.2f} {changed:6d}")
        append_result(
            "debiasing cost",
            ["model", "rows", "mode", "passes per item", "items/s", "slowdown vs none", "predictions changed"],
            [
                Path(args.model).name,
                len(items),
                mode,
                f"{passes:.2f}",
                f"{rate:.2f}",
                f"{results['none'][1] / rate:.2f}x",
                changed,
            ],
        )
    print("debias_cost " + " ".join(f"{m}_items_per_s={r[1]:.3f} {m}_passes={r[0]:.2f}" for m, r in results.items()))


if __name__ == "__main__":
    main()
