"""Prefix reuse in predict, side by side with the plain predict path on the competition test file, in one run.

Both sides run ``Trainer.predict`` with the same loaded model, items, batch size and threads; only
``data.prefix_reuse`` differs. Items that share a paragraph (the test file: 869 items, 725 paragraphs) compute the
shared prompt prefix once. Probabilities are compared item by item.

    python benchmarks/prefix_reuse.py                    # CPU: Qwen2-shaped h512 l4 random model, all 869 rows
    python benchmarks/prefix_reuse.py --model artifacts/gemma-3-270m --rows 200
    python benchmarks/prefix_reuse.py --preset qwen2.5-32b --data-dir DIR   # GPU
    python benchmarks/prefix_reuse.py --rows 200 --dtype bfloat16 --noise-floor
        # how far bf16 rounding alone moves the plain path (batched vs one row at a time), beside reuse vs plain
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import (  # noqa: E402
    COMPETITION,
    PRESETS,
    append_result,
    model_dir,
    predict_trainer,
    profile_gpu,
    set_threads,
    use_preset,
)

from suneung_lit.backbone import BaseSettings
from suneung_lit.data.datamodule import MultipleChoiceDataModule  # noqa: E402
from suneung_lit.data.prefixes import tokens_not_recomputed  # noqa: E402
from suneung_lit.data.records import load_items, write_items  # noqa: E402
from suneung_lit.module import QLoRAMultipleChoice  # noqa: E402


def compare(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> tuple[float, list[str]]:
    """Largest probability difference between two runs over the same ids, and the ids whose answers differ."""
    difference = max(float((a[i] - b[i]).abs().max()) for i in a)
    return difference, [i for i in a if int(a[i].argmax()) != int(b[i].argmax())]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", help="a model folder (default: a random Qwen2-shaped --hidden/--layers model)")
    parser.add_argument("--hidden", type=int, default=512)
    parser.add_argument("--layers", type=int, default=4)
    parser.add_argument("--preset", choices=sorted(PRESETS), help="a Qwen2.5 shape with random 4-bit weights (GPU)")
    parser.add_argument("--data-dir", default=str(COMPETITION), help="folder holding the competition test.csv")
    parser.add_argument("--rows", type=int, help="first N rows of test.csv (default: all)")
    parser.add_argument("--max-length", type=int, default=2048)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--tokens-per-batch", type=int, help="a padded-token budget per batch (both sides)")
    parser.add_argument("--warmup-rows", type=int, default=24, help="rows of the untimed first passes")
    parser.add_argument(
        "--profile-rows", type=int, default=0, help="GPU: then profile a plain pass over this many rows"
    )
    parser.add_argument("--quantization", default="nf4", choices=["nf4", "none"])
    parser.add_argument("--dtype", choices=["float32", "bfloat16"], help="default: bfloat16 on a GPU, else float32")
    parser.add_argument(
        "--noise-floor",
        action="store_true",
        help="also run the plain path one row at a time: how far two plain paths differ at this dtype",
    )
    parser.add_argument(
        "--skip-plain", action="store_true", help="time prefix reuse only (no comparison; when GPU time is short)"
    )
    args = parser.parse_args()
    threads = set_threads()
    path = Path(args.model) if args.model else model_dir(args.hidden, args.layers)
    gpu = torch.cuda.is_available()
    dtype = args.dtype or ("bfloat16" if gpu else "float32")
    module = QLoRAMultipleChoice(
        str(path), base=BaseSettings(quantization=args.quantization, compute_dtype=dtype, dtype=dtype)
    )
    use_preset(module, args.preset, dtype)
    items = load_items(Path(args.data_dir) / "test.csv")[: args.rows]
    results = {}
    with tempfile.TemporaryDirectory() as scratch:
        scratch = Path(scratch)
        write_items(items, scratch / "items.csv")
        write_items(items[: args.warmup_rows], scratch / "warmup.csv")
        if args.profile_rows:
            write_items(items[: args.profile_rows], scratch / "profile.csv")

        def predict(rows: str, reuse: bool, one_by_one: bool = False) -> tuple[float, dict, MultipleChoiceDataModule]:
            datamodule = MultipleChoiceDataModule(
                str(path),
                predict_path=str(scratch / rows),
                max_length=args.max_length,
                eval_batch_size=1 if one_by_one else args.batch_size,
                eval_tokens_per_batch=None if one_by_one else args.tokens_per_batch,
                cache_dir=str(scratch / "cache"),
                prefix_reuse=reuse,
            )
            datamodule.setup("predict")  # tokenization is not timed
            start = time.perf_counter()
            outputs = predict_trainer().predict(module, datamodule=datamodule)
            if gpu:
                torch.cuda.synchronize()
            seconds = time.perf_counter() - start
            probabilities = {i: p for b in outputs for i, p in zip(b["id"], b["probabilities"], strict=True)}
            return seconds, probabilities, datamodule

        for reuse in (False, True):  # untimed: loads the model, compiles both paths' kernels
            predict("warmup.csv", reuse)
        # Prefix reuse first: on a GPU its time is the headline figure, kept even if the plain pass is cut off.
        for reuse in (True,) if args.skip_plain else (True, False):
            seconds, probabilities, datamodule = predict("items.csv", reuse)
            results[reuse] = (seconds, probabilities)
            print(f"{'prefix reuse' if reuse else 'plain'}: {len(items)} rows in {seconds:.1f} s", flush=True)
            if reuse:
                groups = datamodule.encoded["predict"]["prefix_group"]
                shared = datamodule.encoded["predict"]["prefix_length"]
                lengths = datamodule.encoded["predict"]["length"]
        if args.noise_floor:
            _, single, _ = predict("items.csv", False, one_by_one=True)
        if gpu and args.profile_rows:
            profile_gpu(lambda: predict("profile.csv", False))
    if args.skip_plain:  # the reuse pass compared with itself: no speedup, no verdict
        results[False] = (float("nan"), results[True][1])
    (plain_seconds, plain), (reuse_seconds, reused) = results[False], results[True]
    difference, flipped = compare(plain, reused)
    tolerance = 1e-2 if dtype == "bfloat16" else 1e-4  # bf16 keeps ~3 significant digits
    verdict = "identical" if not flipped and difference <= tolerance else "differ"
    verdict = "no plain pass" if args.skip_plain else verdict
    if flipped:
        verdict += f" ({len(flipped)} answers)"
    if args.noise_floor:  # the same comparison between two plain paths: batched and one row at a time
        floor, floor_flips = compare(plain, single)
        print(
            f"noise floor, plain batched vs plain one row at a time: max |dp| {floor:.2e}, {len(floor_flips)} answers"
        )
        verdict += f"; plain batched vs batch 1: max abs dp {floor:.1e}, {len(floor_flips)} answers differ"
    grouped = sum(g >= 0 for g in groups)
    saved = tokens_not_recomputed(groups, shared)
    speedup = plain_seconds / reuse_seconds
    model_name = args.preset or (Path(args.model).name if args.model else f"h{args.hidden} l{args.layers}")
    group_count = len(set(groups) - {-1})
    print(
        f"{model_name} {args.quantization}, {len(items)} test rows, {grouped} in {group_count} prefix groups; "
        f"{saved} of {sum(lengths)} prompt tokens ({saved / sum(lengths):.1%}) not recomputed; {threads} threads"
    )
    print(f"plain {plain_seconds:.1f} s, prefix reuse {reuse_seconds:.1f} s; max |p difference| {difference:.2e}")
    for i in flipped:  # a changed answer: was it a near tie in the plain run (top two within the difference)?
        top = plain[i].float().sort(descending=True).values
        print(f"answer differs: {i} (plain top-2 margin {float(top[0] - top[1]):.1e})")
    append_result(
        "prefix reuse",
        ["model", "rows", "grouped rows", "tokens saved", "plain s", "reuse s", "speedup", "max abs dp", "predictions"],
        [
            f"{model_name} {args.quantization}"
            + (f", {args.tokens_per_batch} tok/batch" if args.tokens_per_batch else "")
            + (f", {dtype}" if args.dtype else ""),
            len(items),
            grouped,
            f"{saved / sum(lengths):.1%}",
            f"{plain_seconds:.1f}",
            f"{reuse_seconds:.1f}",
            f"{speedup:.2f}x",
            f"{difference:.1e}",
            verdict,
        ],
    )
    print(f"prefix_speedup={speedup:.2f} predictions={verdict}")


if __name__ == "__main__":
    main()
