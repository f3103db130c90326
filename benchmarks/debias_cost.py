"""Debiasing cost: scored copies, prompt tokens and items/s of predict under each ``model.debias``, in one run.

All modes score the same competition test rows with the same model through ``Trainer.predict``, loaded and warmed
(one untimed pass over a batch) before any timed pass; each mode then runs ``--repeats`` times, alternated with the
others (forwards, then backwards), and its best pass is reported:
``none``; ``pride`` and ``cyclic`` with each item's shifted copies scored from their shared prompt prefix
(``data.shift_prefix_reuse``, the default), a prefix pass and then a suffix pass from the key/value cache
(``model.prefix_layout cached``); ``cyclic-packed``, the same groups in one pass each, every suffix after its
prefix under a 4D mask (``model.prefix_layout packed``); and ``cyclic-plain``, every copy scored in full.
``offsets`` costs what ``none`` costs (one pass) and is left out. Printed beside each: how many predictions differ
from ``none``, and for the cyclic modes the largest probability difference from ``cyclic-plain`` (they must agree).

    python benchmarks/debias_cost.py                                   # Gemma 3 270M on the CPU, ~5 minutes
    python benchmarks/debias_cost.py --model artifacts/tiny-qwen2 --rows 200
    python benchmarks/debias_cost.py --model artifacts/qwen2.5-coder-1.5b-instruct --dtype bfloat16 \
        --rows 12 --max-length 1024 --batch-size 4                     # the real Qwen on a CPU, ~10 minutes
    python benchmarks/debias_cost.py ... --profile                     # then one profiled pass per mode
    python benchmarks/debias_cost.py --preset qwen2.5-32b --rows 200 --max-length 2048 --batch-size 16 \
        --data-dir DIR                                                 # 32B-shaped random NF4 weights, GPU
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import lightning as L
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import (  # noqa: E402
    PRESETS,
    ROOT,
    add_data_dir_argument,
    alternated_timings,
    append_result,
    cpu_flags,
    fitting_items,
    profile_cpu,
    profile_gpu,
    set_threads,
    use_preset,
)

from suneung_lit.backbone import BaseSettings
from suneung_lit.data.datamodule import MultipleChoiceDataModule  # noqa: E402
from suneung_lit.data.prefixes import tokens_not_recomputed  # noqa: E402
from suneung_lit.data.records import load_items, write_items  # noqa: E402
from suneung_lit.module import QLoRAMultipleChoice  # noqa: E402

MODES = ("none", "pride", "cyclic-plain", "cyclic", "cyclic-packed")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default=str(ROOT / "artifacts" / "gemma-3-270m"))
    parser.add_argument("--preset", choices=sorted(PRESETS), help="a Qwen2.5 shape with random 4-bit weights (GPU)")
    add_data_dir_argument(parser)
    parser.add_argument("--data", help="a file of items (default: test.csv in --data-dir)")
    parser.add_argument("--rows", type=int, default=40, help="first N rows that fit --max-length")
    parser.add_argument("--max-length", type=int, default=448)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--quantization", default="none", choices=["none", "nf4"])
    parser.add_argument("--dtype", default=None, choices=["float32", "bfloat16"], help="default: bf16 on a GPU")
    parser.add_argument("--template", default="base", help="data.template (choices_last: only the choices differ)")
    parser.add_argument("--tokens-only", action="store_true", help="count prompt tokens per mode; load no model")
    parser.add_argument("--repeats", type=int, default=2, help="timed passes per mode, alternated; best is kept")
    parser.add_argument("--modes", nargs="+", default=list(MODES), choices=list(MODES), help="none always runs")
    parser.add_argument(
        "--profile", action="store_true", help="after the timed passes, one profiled pass per mode: time per operator"
    )
    args = parser.parse_args()
    if args.preset:  # random weights of that shape under the real Qwen2.5 tokenizer
        args.model, args.quantization = str(ROOT / "artifacts" / "tiny-qwen2"), "nf4"
    threads = set_threads()
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(args.model)
    data = args.data or Path(args.data_dir) / "test.csv"
    items = fitting_items(load_items(data), tokenizer, args.max_length, args.template, limit=args.rows)
    if args.tokens_only:
        return count_tokens(args, items)
    dtype = args.dtype or ("bfloat16" if torch.cuda.is_available() else "float32")
    module = QLoRAMultipleChoice(
        args.model, base=BaseSettings(quantization=args.quantization, compute_dtype=dtype, dtype=dtype)
    )
    use_preset(module, args.preset, dtype)
    module.configure_model()  # load outside every timed pass (a no-op where a preset swapped its model in)
    results = {}
    with tempfile.TemporaryDirectory() as folder:
        write_items(items, Path(folder) / "items.csv")
        datamodules = {mode: mode_data(args, mode, Path(folder)) for mode in modes(args)}
        for datamodule in datamodules.values():
            datamodule.setup("predict")  # tokenized once, outside the timing; setup keeps what it encoded

        def predict(mode: str, datamodule: MultipleChoiceDataModule | None = None):
            module.hparams.debias = mode.split("-")[0]
            module.hparams.prefix_layout = "packed" if mode.endswith("-packed") else "cached"
            trainer = L.Trainer(accelerator="auto", devices=1, logger=False, enable_progress_bar=False)
            return trainer.predict(module, datamodule=datamodule or datamodules[mode])

        # Warm-up, untimed: the first pass pays for lazy initialisation (kernels, allocator, the inference cast).
        warm_items = items[: args.batch_size]
        write_items(warm_items, Path(folder) / "warm.csv")
        predict("none", mode_data(args, "none", Path(folder), "warm.csv"))
        timings = alternated_timings({mode: lambda mode=mode: predict(mode) for mode in modes(args)}, args.repeats)
        if args.profile:  # untimed by the table: where each mode's time goes, by operator category
            for mode in modes(args):
                print(f"== profile of one {mode} pass")
                (profile_gpu if torch.cuda.is_available() else profile_cpu)(lambda mode=mode: predict(mode))
        for mode, (seconds, every, outputs) in timings.items():
            probabilities = {i: p for b in outputs for i, p in zip(b["id"], b["probabilities"], strict=True)}
            print(f"{mode:13s} passes: " + ", ".join(f"{t:.1f} s" for t in every))
            results[mode] = (
                *prompt_cost(datamodules[mode].encoded["predict"], len(items)),
                len(items) / seconds,
                probabilities,
                " / ".join(f"{t:.1f}" for t in every),
            )
    report(results, args, len(items), threads)


def modes(args) -> list[str]:
    """The modes to run, ``none`` (the baseline every cost is relative to) first."""
    return ["none"] + [m for m in args.modes if m != "none"]


def mode_data(args, mode: str, folder: Path, name: str = "items.csv") -> MultipleChoiceDataModule:
    """The data module that scores ``folder/name`` under ``mode`` (``cyclic-plain``: no prefix sharing)."""
    return MultipleChoiceDataModule(
        args.model,
        predict_path=str(folder / name),
        max_length=args.max_length,
        eval_batch_size=args.batch_size,
        cache_dir=str(folder / "cache" / name),
        debias=mode.split("-")[0],
        shift_prefix_reuse=not mode.endswith("-plain"),
        template=args.template,
    )


def count_tokens(args, items) -> None:
    """Prompt tokens each mode computes per item: the compute a forward pass costs, without running one."""
    with tempfile.TemporaryDirectory() as folder:
        write_items(items, Path(folder) / "items.csv")
        for mode in modes(args):
            datamodule = mode_data(args, mode, Path(folder))
            datamodule.setup("predict")
            copies, tokens = prompt_cost(datamodule.encoded["predict"], len(items))
            print(f"{mode:13s} {copies:5.2f} copies/item {tokens:7.0f} prompt tokens/item")
            append_result(
                "debiasing cost in prompt tokens",
                ["tokenizer", "rows", "max length", "mode", "copies per item", "prompt tokens per item"],
                [labelled(args), len(items), args.max_length, mode, f"{copies:.2f}", f"{tokens:.0f}"],
            )


def prompt_cost(encoded, items: int) -> tuple[float, float]:
    """Scored copies per item and prompt tokens computed per item (a shared prefix counted once per group)."""
    tokens = sum(encoded["length"])
    if "prefix_group" in encoded.column_names:
        tokens -= tokens_not_recomputed(encoded["prefix_group"], encoded["prefix_length"])
    return len(encoded) / items, tokens / items


def labelled(args) -> str:
    """The model's name, and the template when it is not the default."""
    name = args.preset or Path(args.model).name
    return name if args.template == "base" else f"{name}, {args.template} template"


def report(results: dict, args, items: int, threads: int) -> None:
    base = {i: int(p.argmax()) for i, p in results["none"][3].items()}
    plain = results["cyclic-plain"][3] if "cyclic-plain" in results else None
    print(f"\n{labelled(args)}, {items} rows <= {args.max_length} tokens, {threads} threads, {cpu_flags()}")
    print("mode          copies/item  prompt tokens/item  items/s  cost vs none  changed vs none  max |dp| vs plain")
    for mode, (copies, tokens, rate, probabilities, passes) in results.items():
        changed = sum(int(probabilities[i].argmax()) != base[i] for i in base)
        agreement = "-"
        if mode.startswith("cyclic") and plain is not None:
            agreement = f"{max(float((probabilities[i] - plain[i]).abs().max()) for i in plain):.1e}"
        slowdown = results["none"][2] / rate
        print(f"{mode:13s} {copies:11.2f} {tokens:19.0f} {rate:8.3f} {slowdown:12.2f}x {changed:15d} {agreement:>18s}")
        append_result(
            "debiasing cost, warm model, alternated passes (best of --repeats)",
            ["model", "rows", "mode", "copies per item", "prompt tokens per item", "items/s", "cost vs none",
             "predictions changed vs none", "max prob. diff. vs cyclic-plain", "passes (s)", "machine"],
            [labelled(args), items, mode, f"{copies:.2f}", f"{tokens:.0f}", f"{rate:.3f}",
             f"{slowdown:.2f}x", changed, agreement, passes, f"{threads} threads, {cpu_flags()}"],
        )  # fmt: skip
    print("debias_cost " + " ".join(f"{m}_items_per_s={r[2]:.3f}" for m, r in results.items()))


if __name__ == "__main__":
    main()
