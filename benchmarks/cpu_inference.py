"""CPU inference options for a real model, side by side in one run: prompt tokens/s and agreement with float32.

Every option scores the same items through the package's own predict path (``Trainer.predict`` on the module):
``float32`` (the baseline), ``bfloat16`` (weights bf16, ``bf16-mixed`` autocast), ``nf4`` (bitsandbytes 4-bit,
bf16 compute) and ``dynamic_int8`` (torch's dynamically quantized int8 linear layers, float32 elsewhere).
Agreement is against float32: the largest option-probability difference and the answers that change. The CPU's
flags decide what is fast (bf16 matmuls need AVX-512 BF16 or AMX, int8 ones VNNI), so they are printed too.

    python benchmarks/cpu_inference.py --model artifacts/qwen2.5-coder-1.5b-instruct     # data/klue, ~10 min
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
from common import ROOT, append_result, cpu_flags, set_threads  # noqa: E402

from suneung_lit.backbone import BaseSettings
from suneung_lit.data.datamodule import MultipleChoiceDataModule  # noqa: E402
from suneung_lit.data.records import load_items, write_items  # noqa: E402
from suneung_lit.module import QLoRAMultipleChoice  # noqa: E402

OPTIONS = {
    "float32": dict(quantization="none", dtype="float32", precision="32-true"),
    "bfloat16": dict(quantization="none", dtype="bfloat16", precision="bf16-mixed"),
    "nf4": dict(quantization="nf4", dtype="bfloat16", precision="bf16-mixed"),
    "dynamic_int8": dict(quantization="dynamic_int8", dtype="float32", precision="32-true"),
}


def predict(args, option: str, path: Path, work: Path) -> tuple[dict[str, torch.Tensor], float, int]:
    settings = OPTIONS[option]
    module = QLoRAMultipleChoice(
        args.model,
        base=BaseSettings(
            quantization=settings["quantization"],
            compute_dtype=settings["dtype"],
            dtype=settings["dtype"],
            attn_implementation="sdpa",
        ),
    )
    datamodule = MultipleChoiceDataModule(
        args.model, predict_path=str(path), max_length=args.max_length, eval_batch_size=args.batch_size,
        cache_dir=str(work / "cache"),
    )  # fmt: skip
    trainer = L.Trainer(
        accelerator="cpu", precision=settings["precision"], logger=False, enable_progress_bar=False,
        enable_model_summary=False,
    )  # fmt: skip
    datamodule.setup("predict")
    module.configure_model()  # loading is not part of the timed pass
    started = time.perf_counter()
    outputs = trainer.predict(module, datamodule=datamodule)
    seconds = time.perf_counter() - started
    rows = {
        i: p[: int(n)].float()
        for batch in outputs
        for i, p, n in zip(batch["id"], batch["probabilities"], batch["num_choices"], strict=True)
    }
    return rows, seconds, sum(datamodule.encoded["predict"]["length"])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default=str(ROOT / "artifacts" / "qwen2.5-coder-1.5b-instruct"))
    parser.add_argument("--data", default=str(ROOT / "data" / "klue" / "klue_reading.jsonl"))
    parser.add_argument("--max-length", type=int, default=1024)
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--options", nargs="+", default=list(OPTIONS), choices=list(OPTIONS))
    args = parser.parse_args()
    threads = set_threads()
    flags = cpu_flags()
    items = load_items(args.data)
    print(f"{args.model}: {len(items)} items from {args.data}; {threads} threads; CPU flags: {flags}", flush=True)
    results = {}
    with tempfile.TemporaryDirectory() as folder:
        work = Path(folder)
        write_items(items, work / "items.csv")
        for option in ["float32"] + [o for o in args.options if o != "float32"]:
            results[option] = predict(args, option, work / "items.csv", work)
            rows, seconds, tokens = results[option]
            print(f"{option}: {seconds:.1f} s, {tokens / seconds:.0f} prompt tokens/s", flush=True)
    baseline, base_seconds, _ = results["float32"]
    for option, (rows, seconds, tokens) in results.items():
        difference = max(float((rows[i] - baseline[i]).abs().max()) for i in baseline)
        changed = [i for i in baseline if int(rows[i].argmax()) != int(baseline[i].argmax())]
        print(
            f"{option:9s} {tokens / seconds:6.0f} tok/s  {base_seconds / seconds:4.2f}x float32  "
            f"max |p - p_float32| {difference:.4f}  answers changed: {len(changed)} {changed[:5]}"
        )
        append_result(
            "CPU inference options on a real model",
            ["model", "items", "option", "prompt tok/s", "vs float32", "max prob. difference", "answers changed"],
            [
                f"{Path(args.model).name} (CPU flags: {flags})",
                f"{len(items)} from {Path(args.data).name}, {tokens} prompt tokens",
                option,
                f"{tokens / seconds:.0f}",
                f"{base_seconds / seconds:.2f}x",
                f"{difference:.4f}",
                f"{len(changed)} of {len(baseline)}",
            ],
        )


if __name__ == "__main__":
    main()
