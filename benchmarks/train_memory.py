"""Training-step memory and speed: answer-position logits against full-sequence logits with a masked loss.

The baseline is the usual completion-only SFT step: ``model(input_ids, labels=...)`` with every label but the
answer set to -100, which builds logits for every position before the loss ignores all but one. Ours projects
only the answer position (``logits_to_keep=1``). Same model, same batch, one process per measurement so that
one measurement's memory cannot hide another's. On CPU, memory is the peak resident set size above the level
before the step (sampled every 0.5 ms); on a GPU, ``torch.cuda.max_memory_allocated``.

``--unsloth`` adds the baseline step on the same weights loaded and patched by unsloth (``unsloth_step.py``, in a
process of its own; a preset is first saved as a bf16 folder by ``common.save_random_preset``). The untrained
model's loss (the warm-up step's; LoRA starts as the identity) is printed for every mode: the same weights and
batch give the same value, which checks that the modes compare the same step.

    python benchmarks/train_memory.py                        # CPU default, lengths 512/1024/2048
    python benchmarks/train_memory.py --preset qwen2.5-32b --lengths 1024 2048 --batch-size 1 \
        --gradient-checkpointing                              # on a GPU: random 4-bit 32B, ~20 GB
    UNSLOTH_SITE=/tmp/unsloth-site python benchmarks/train_memory.py --preset qwen2.5-7b --lengths 1024 2048 \
        --batch-size 1 --unsloth                              # with unsloth (benchmarks/unsloth_site.sh)
"""

from __future__ import annotations

import argparse
import ctypes
import gc
import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import (  # noqa: E402
    PRESETS,
    add_data_dir_argument,
    append_result,
    cpu_flags,
    device_name,
    model_dir,
    preset_lora_model,
    resident_bytes,
    save_random_preset,
    set_threads,
)


class PeakSampler:
    """Samples the process's resident memory in a thread; ``peak`` is the highest value seen."""

    def __init__(self):
        self.peak = resident_bytes()
        self._running = True
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while self._running:
            self.peak = max(self.peak, resident_bytes())
            time.sleep(0.0005)

    def __enter__(self) -> PeakSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._running = False
        self._thread.join()
        self.peak = max(self.peak, resident_bytes())


def real_batch(tokenizer, length: int, batch_size: int, device, data_dir: Path) -> tuple[torch.Tensor, torch.Tensor]:
    """Rows of exactly ``length`` tokens cut from real competition prompts, and their answer token ids."""
    from suneung_lit.data.prompts import load_template, render_prompt
    from suneung_lit.data.records import load_items

    items = load_items(data_dir / "train.csv")[: batch_size * 4]
    template = load_template("base")
    rows, labels = [], []
    for item in items[:batch_size]:
        ids = tokenizer.encode(render_prompt(item, template, tokenizer))
        while len(ids) < length:
            ids = ids + ids
        rows.append(ids[-length:])  # keep the end: the answer position stays last
        labels.append(tokenizer.encode(str(item.answer))[0])
    return torch.tensor(rows, device=device), torch.tensor(labels, device=device)


def build(args: argparse.Namespace):
    """The LoRA-wrapped 4-bit model in training mode and its tokenizer."""
    from transformers import AutoTokenizer

    from suneung_lit.backbone import BaseSettings, LoraSettings
    from suneung_lit.module import QLoRAMultipleChoice

    set_threads()
    gpu = torch.cuda.is_available()
    device = torch.device("cuda" if gpu else "cpu")
    dtype = "bfloat16" if gpu else "float32"
    path = model_dir(args.hidden, args.layers)
    module = QLoRAMultipleChoice(
        str(path),
        base=BaseSettings(compute_dtype=dtype, dtype=dtype),
        lora=LoraSettings(dropout=0.0),
        gradient_checkpointing=args.gradient_checkpointing,
    )
    if args.preset:
        module.model = preset_lora_model(args.preset, device, getattr(torch, dtype), args.gradient_checkpointing)
    module.configure_model()  # loads from `path` unless a preset model is already set
    model = module.model
    model.train()
    return model, AutoTokenizer.from_pretrained(path)


def measure(model, tokenizer, mode: str, length: int, args: argparse.Namespace) -> dict[str, float]:
    from suneung_lit.scoring import answer_logits

    gpu = torch.cuda.is_available()
    input_ids, labels = real_batch(tokenizer, length, args.batch_size, model.device, args.data_dir)
    mask = torch.ones_like(input_ids)
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=1e-4)

    def step() -> float:
        if mode == "ours":
            loss = torch.nn.functional.cross_entropy(answer_logits(model, input_ids, mask).float(), labels)
        else:
            full = torch.cat([input_ids, labels[:, None]], dim=1)
            masked = torch.full_like(full, -100)
            masked[:, -1] = labels
            loss = model(input_ids=full, attention_mask=torch.ones_like(full), labels=masked).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        return float(loss.detach())

    # Warm-up: allocates optimizer state, compiles kernels. Its loss is the untrained model's (LoRA starts as the
    # identity), so every way of taking the step on the same weights and batch must give the same value.
    first_loss = step()
    if gpu:
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        before = torch.cuda.memory_allocated()
    else:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
        before = resident_bytes()
    times = []
    with PeakSampler() as sampler:
        for _ in range(args.steps):
            start = time.perf_counter()
            step()
            if gpu:
                torch.cuda.synchronize()
            times.append(time.perf_counter() - start)
    peak = (torch.cuda.max_memory_allocated() if gpu else sampler.peak) - before
    seconds = sorted(times)[len(times) // 2]
    return {"peak_mb": peak / 2**20, "tokens_per_s": input_ids.numel() / seconds, "step_s": seconds,
            "first_loss": first_loss}  # fmt: skip


def make_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--lengths", type=int, nargs="+", default=[512, 1024, 2048])
    parser.add_argument("--hidden", type=int, default=128)
    parser.add_argument("--layers", type=int, default=2)
    parser.add_argument("--batch-size", type=int, default=2)
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--gradient-checkpointing", action="store_true")
    parser.add_argument("--preset", choices=sorted(PRESETS), help="a Qwen2.5 shape with random 4-bit weights")
    parser.add_argument(
        "--unsloth",
        action="store_true",
        help="also the baseline step on the same weights loaded and patched by unsloth (benchmarks/unsloth_step.py)",
    )
    add_data_dir_argument(parser)
    parser.add_argument("--single", nargs=2, metavar=("MODE", "LENGTH"), help=argparse.SUPPRESS)
    return parser


def last_json(command: list[str], lines: int = 1, env: dict[str, str] | None = None) -> list[dict]:
    """Runs a measurement process and reads the JSON its last ``lines`` lines print."""
    out = subprocess.run(command, capture_output=True, text=True, env=env)
    if out.returncode:
        raise RuntimeError(f"{' '.join(command)} failed:\n{out.stdout[-3000:]}\n{out.stderr[-3000:]}")
    return [json.loads(line) for line in out.stdout.strip().splitlines()[-lines:]]


def unsloth_env() -> dict[str, str]:
    """The environment of the unsloth process: ``UNSLOTH_SITE`` (a folder of unsloth and the versions it needs,
    ``benchmarks/unsloth_site.sh``) first on its path, so no other measurement sees those versions; offline."""
    env = dict(os.environ, HF_HUB_OFFLINE="1", UNSLOTH_DISABLE_STATISTICS="1")
    if env.get("UNSLOTH_SITE"):
        env["PYTHONPATH"] = os.pathsep.join(p for p in (env["UNSLOTH_SITE"], env.get("PYTHONPATH")) if p)
    return env


def measure_unsloth(args: argparse.Namespace, passthrough: list[str]) -> dict[int, dict[str, float]]:
    """unsloth's figures per length: the same weights (a preset saved by ``save_random_preset``, or the CPU model's
    folder) loaded by unsloth in another process; on a GPU one process for every length, as the others share one."""
    gpu = torch.cuda.is_available()
    if args.preset:
        folder = save_random_preset(args.preset, torch.device("cuda" if gpu else "cpu"))
    else:
        folder = model_dir(args.hidden, args.layers)
    script = str(Path(__file__).with_name("unsloth_step.py"))
    base = [sys.executable, script, *passthrough, "--folder", str(folder)]
    if gpu:
        results = last_json([*base, "--lengths", *map(str, args.lengths)], len(args.lengths), unsloth_env())
    else:
        results = [last_json([*base, "--lengths", str(length)], 1, unsloth_env())[0] for length in args.lengths]
    return dict(zip(args.lengths, results, strict=True))


def main() -> None:
    args = make_parser().parse_args()
    if args.single:
        print(json.dumps(measure(*build(args), args.single[0], int(args.single[1]), args)))
        return
    model_dir(args.hidden, args.layers)  # build once before the measurements
    passthrough = [a for a in sys.argv[1:] if a not in ("--single", "--unsloth")]
    results: dict[tuple[str, int], dict[str, float]] = {}
    # On a GPU the allocator counts exactly what is allocated, so one process builds the model once for all
    # measurements (a 32B build is the slow part); on the CPU, resident memory is only comparable per process.
    built = build(args) if torch.cuda.is_available() else None
    for length in args.lengths:
        for mode in ("baseline", "ours"):
            if built is not None:
                results[mode, length] = measure(*built, mode, length, args)
                print(f"{mode} {length}: {results[mode, length]}", flush=True)
                continue
            command = [sys.executable, __file__, *passthrough, "--single", mode, str(length)]
            results[mode, length] = last_json(command)[0]
    del built
    if args.unsloth:
        gc.collect()  # each 4-bit layer and its weight refer to each other: only the collector frees them
        torch.cuda.empty_cache()  # the unsloth process needs the room this one held
        try:
            for length, result in measure_unsloth(args, passthrough).items():
                results["unsloth", length] = result
                print(f"unsloth {length}: {result}", flush=True)
        except RuntimeError as error:  # the rows of the other two modes are still worth keeping
            print(f"unsloth failed; its column is left out: {error}", flush=True)
            args.unsloth = False
    label = args.preset or f"h{args.hidden} l{args.layers}"
    print(f"{device_name()}; CPU flags: {cpu_flags()}; batch {args.batch_size}, model {label} nf4 + LoRA")
    modes = ["baseline", "ours", *(["unsloth"] if args.unsloth else [])]
    print(f"{'tokens':>7}" + "".join(f"{m + ' MB':>14}{m + ' tok/s':>17}{m + ' loss':>16}" for m in modes))
    for length in args.lengths:
        row = [results[m, length] for m in modes]
        print(f"{length:>7}" + "".join(f"{r['peak_mb']:>14.0f}{r['tokens_per_s']:>17.0f}{r['first_loss']:>16.4f}"
                                       for r in row))  # fmt: skip
        b, o = row[0], row[1]
        ratio = b["peak_mb"] / max(o["peak_mb"], 1e-9)
        if not args.unsloth:
            append_result(
                "training step memory",
                [
                    "model",
                    "batch",
                    "tokens",
                    "baseline peak MB",
                    "ours peak MB",
                    "memory ratio",
                    "baseline tok/s",
                    "ours tok/s",
                ],  # fmt: skip
                [
                    f"{label} nf4",
                    args.batch_size,
                    length,
                    f"{b['peak_mb']:.0f}",
                    f"{o['peak_mb']:.0f}",
                    f"{ratio:.1f}x",
                    f"{b['tokens_per_s']:.0f}",
                    f"{o['tokens_per_s']:.0f}",
                ],  # fmt: skip
            )
            continue
        u = row[2]
        append_result(
            "training step: transformers+peft, ours, unsloth",
            ["model", "batch", "tokens", "gradient checkpointing", "baseline peak MB", "ours peak MB",
             "unsloth peak MB", "baseline tok/s", "ours tok/s", "unsloth tok/s", "first-step losses", "CPU flags"],
            [f"{label} nf4", args.batch_size, length, args.gradient_checkpointing, f"{b['peak_mb']:.0f}",
             f"{o['peak_mb']:.0f}", f"{u['peak_mb']:.0f}", f"{b['tokens_per_s']:.0f}", f"{o['tokens_per_s']:.0f}",
             f"{u['tokens_per_s']:.0f}", " / ".join(f"{r['first_loss']:.4f}" for r in row), cpu_flags()],
        )  # fmt: skip
    reference = 1024 if 1024 in args.lengths else args.lengths[0]
    ratio = results["baseline", reference]["peak_mb"] / max(results["ours", reference]["peak_mb"], 1e-9)
    print(f"memory_ratio={ratio:.2f}")


if __name__ == "__main__":
    main()
