"""Chain of thought against answer-only scoring on the same held-out items, in one run.

Items: the first N held-out items per source (reading from KLUE-MRC, knowledge from MMMLU/KMMLU) of the accuracy
harness's paragraph-grouped split of the competition train set (same seed and length limit, so the same items as
``accuracy.py``'s first N), zero-shot or with an adapter checkpoint. Answer-only reads the option logits after the
``base`` prompt; CoT generates with the ``cot_reasoning`` template (reasoning first) and extracts the answer. Both
stand beside the best constant predictor on the same items, with 95% Wilson intervals and items/s, per source, and
paired item by item (exact McNemar p).

    python benchmarks/cot_vs_answer.py --per-source 12 --max-new-tokens 96     # Gemma 3 270M on the CPU
    python benchmarks/cot_vs_answer.py --model artifacts/qwen2.5-coder-1.5b-instruct --dtype bfloat16 \
        --per-source 6 --max-tokens 1024 --max-new-tokens 512                  # the real Qwen on the CPU
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
from common import COMPETITION, ROOT, append_result, per_source_split, set_threads  # noqa: E402

from suneung_lit.backbone import BaseSettings
from suneung_lit.data.datamodule import MultipleChoiceDataModule  # noqa: E402
from suneung_lit.data.records import load_items, write_items  # noqa: E402
from suneung_lit.evaluation import accuracy, best_constant, paired_difference  # noqa: E402
from suneung_lit.module import QLoRAMultipleChoice  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default=str(ROOT / "artifacts" / "gemma-3-270m"))
    parser.add_argument("--ckpt", help="an adapter checkpoint from fit (default: zero-shot)")
    parser.add_argument("--data-dir", type=Path, default=COMPETITION)
    parser.add_argument("--per-source", type=int, default=12, help="held-out items per source")
    parser.add_argument("--max-tokens", type=int, default=448)
    parser.add_argument("--max-new-tokens", type=int, default=96)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--dtype", default="float32", choices=["float32", "bfloat16"])
    args = parser.parse_args()
    set_threads()
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(args.model)
    items = load_items(args.data_dir / "train.csv")
    _, heldout = per_source_split(items, tokenizer, args.max_tokens, max_heldout=args.per_source)
    gold = [item.answer for item in heldout]
    _, constant = best_constant(gold, [item.num_choices for item in heldout])
    right: dict[str, list[bool]] = {}
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
            right[mode] = [predicted[i.id] == i.answer for i in heldout]
    print(f"\n{Path(args.model).name}, {len(heldout)} held-out items, {'zero-shot' if not args.ckpt else args.ckpt}")
    for mode, (score, rate, paths) in results.items():
        print(f"  {mode:9s} accuracy {score}  {rate:.3f} items/s  {dict(paths) if paths else ''}")
    print(f"  constant  accuracy {constant}")
    print(f"  generate minus logits, paired: {paired_difference(right['logits'], right['generate'])}")
    for source in sorted({i.metadata["source"] for i in heldout}):
        rows = [k for k, item in enumerate(heldout) if item.metadata["source"] == source]
        _, source_constant = best_constant([gold[k] for k in rows], [heldout[k].num_choices for k in rows])
        scores = {mode: sum(right[mode][k] for k in rows) / len(rows) for mode in right}
        print(
            f"  {source} ({len(rows)} items): logits {scores['logits']:.3f}, generate {scores['generate']:.3f}, "
            f"constant {source_constant.value:.3f}; paired "
            f"{paired_difference([right['logits'][k] for k in rows], [right['generate'][k] for k in rows])}"
        )
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
