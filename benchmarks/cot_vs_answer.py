"""Chain of thought against answer-only scoring on the same held-out items, in one run.

Items: the first N held-out items of the accuracy harness's paragraph-grouped split of the competition train set
(same seed and length limit), zero-shot or with an adapter checkpoint. Answer-only reads the option logits after
the ``base`` prompt; CoT generates with the ``cot_reasoning`` template (reasoning first) and extracts the answer.
Both stand beside the best constant predictor on the same items, with 95% Wilson intervals and items/s.

    python benchmarks/cot_vs_answer.py --items 24 --max-new-tokens 96     # Gemma 3 270M on the CPU
    python benchmarks/cot_vs_answer.py --model artifacts/qwen2.5-coder-1.5b-instruct --dtype bfloat16 \
        --items 12 --max-tokens 1024 --max-new-tokens 192                 # the real Qwen on the CPU, ~15 min
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

import lightning as L

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import COMPETITION, ROOT, append_result, fitting_items, set_threads  # noqa: E402

from suneung_lit.backbone import BaseSettings
from suneung_lit.data.cleaning import clean  # noqa: E402
from suneung_lit.data.datamodule import MultipleChoiceDataModule  # noqa: E402
from suneung_lit.data.records import load_items, write_items  # noqa: E402
from suneung_lit.data.splitting import grouped_split  # noqa: E402
from suneung_lit.evaluation import accuracy, best_constant  # noqa: E402
from suneung_lit.module import QLoRAMultipleChoice  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default=str(ROOT / "artifacts" / "gemma-3-270m"))
    parser.add_argument("--ckpt", help="an adapter checkpoint from fit (default: zero-shot)")
    parser.add_argument("--data-dir", type=Path, default=COMPETITION)
    parser.add_argument("--items", type=int, default=24)
    parser.add_argument("--max-tokens", type=int, default=448)
    parser.add_argument("--max-new-tokens", type=int, default=96)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--dtype", default="float32", choices=["float32", "bfloat16"])
    args = parser.parse_args()
    set_threads()
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(args.model)
    items, _ = clean(load_items(args.data_dir / "train.csv"))
    _, heldout = grouped_split(items, 0.15, 42)  # the accuracy harness's split
    heldout = fitting_items(heldout, tokenizer, args.max_tokens, limit=args.items)
    gold = [item.answer for item in heldout]
    _, constant = best_constant(gold, [item.num_choices for item in heldout])
    results = {}
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "items.csv"
        write_items(heldout, path)
        for mode, template in (("logits", "base"), ("generate", "cot_reasoning")):
            module = QLoRAMultipleChoice(
                args.model,
                base=BaseSettings(quantization="none", dtype=args.dtype, compute_dtype=args.dtype),
                answer_mode=mode,
                max_new_tokens=args.max_new_tokens,
            )
            datamodule = MultipleChoiceDataModule(
                args.model,
                predict_path=str(path),
                template=template,
                max_length=args.max_tokens + 64,
                eval_batch_size=args.batch_size,
                cache_dir=str(Path(folder) / "cache"),
                answer_mode=mode,
            )
            trainer = L.Trainer(accelerator="auto", devices=1, logger=False, enable_progress_bar=False)
            started = time.perf_counter()
            outputs = trainer.predict(module, datamodule=datamodule, ckpt_path=args.ckpt)
            seconds = time.perf_counter() - started
            predicted = {i: int(p) for b in outputs for i, p in zip(b["id"], b["prediction"], strict=True)}
            paths = Counter(p for b in outputs for p in b.get("path", []))
            results[mode] = (accuracy([predicted[i.id] for i in heldout], gold), len(heldout) / seconds, paths)
    print(f"\n{Path(args.model).name}, {len(heldout)} held-out items, {'zero-shot' if not args.ckpt else args.ckpt}")
    for mode, (score, rate, paths) in results.items():
        print(f"  {mode:9s} accuracy {score}  {rate:.3f} items/s  {dict(paths) if paths else ''}")
    print(f"  constant  accuracy {constant}")
    for mode, (score, rate, paths) in results.items():
        append_result(
            "chain of thought vs answer-only",
            ["model", "items", "mode", "accuracy [95% interval]", "best constant", "items/s", "extraction paths"],
            [
                f"{Path(args.model).name} {'zero-shot' if not args.ckpt else 'fine-tuned'}",
                len(heldout),
                mode if mode == "logits" else f"generate ({args.max_new_tokens} new tokens)",
                str(score),
                f"{constant.value:.3f}",
                f"{rate:.3f}",
                ", ".join(f"{k}: {v}" for k, v in sorted(paths.items())) or "-",
            ],
        )
    (a, ra, _), (c, rc, _) = results["logits"], results["generate"]
    print(
        f"cot_vs_answer answer_only={a.value:.4f} cot={c.value:.4f} constant={constant.value:.4f} "
        f"slowdown={ra / rc:.1f}"
    )


if __name__ == "__main__":
    main()
