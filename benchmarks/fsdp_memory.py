"""Sharded 4-bit LoRA training (``--trainer.strategy fsdp_lora``) beside the same fit on one device, in one run:
peak memory per rank, seconds per optimizer step, tokens per second and the training losses.

Each mode is a real ``Trainer.fit`` of ``QLoRAMultipleChoice`` on the competition train items, in a process of its
own (Lightning starts one more per further rank), so that one mode's memory cannot hide the other's. The base is a
preset Qwen2.5 shape with random 4-bit weights (``common.random_4bit_model``), built where ``configure_model`` loads
a real one (``backbone.loading_device``: on the device alone, in host memory under FSDP, which then moves each
unit's shard to the device) and as it loads one: under FSDP packed in the compute dtype with every unquantized
weight in it too (``model.base.quant_storage: auto``). So the 7B and 32B shapes run where their real weights cannot
travel, and the loading peak per rank is the one a real model would have.

Both modes draw the same base, adapter initialisation and batches: with ``n`` ranks each sharded step sees ``n``
batches and the single device accumulates ``n``, so their losses agree to float32 rounding on a CPU, and to bf16
rounding on a GPU, where one device keeps norms, embedding and head in float32 (``prepare_model_for_kbit_training``)
and FSDP in bf16: a check that sharding trains what one device trains, on a GPU as the CPU test does with gloo. On a
GPU it also quantizes one weight in host memory and on the GPU and compares them (``host_quantization_check``).

    python benchmarks/fsdp_memory.py --preset qwen2.5-7b --max-length 2048 --steps 6   # GPU: all visible GPUs
    python benchmarks/fsdp_memory.py --preset check --devices 2 --steps 3              # CPU: two gloo ranks
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import lightning as L
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import (  # noqa: E402
    PRESETS,
    ROOT,
    add_data_dir_argument,
    append_result,
    cpu_flags,
    device_name,
    random_4bit_model,
    resident_bytes,
    set_threads,
)

from suneung_lit import sharding  # noqa: E402
from suneung_lit.backbone import BaseSettings, LoraSettings, add_lora, loading_device  # noqa: E402
from suneung_lit.module import QLoRAMultipleChoice  # noqa: E402
from suneung_lit.optimization import OptimizationSettings  # noqa: E402

MODES = ("single", "sharded")


class PresetQLoRA(QLoRAMultipleChoice):
    """The multiple-choice module on a preset's random 4-bit base, built where ``configure_model`` loads a real one."""

    preset = "check"

    def configure_model(self) -> None:
        if self.model is not None:
            return
        sharded = sharding.is_sharded(self._trainer)
        storage = sharding.quant_storage(self.base.quant_storage, self.base.compute_dtype, sharded)
        device = self.trainer.strategy.root_device
        base = random_4bit_model(
            self.preset,
            loading_device(device, quantized=True, sharded=sharded),
            self.base.torch_compute_dtype,
            quant_storage=getattr(torch, storage),
            dtype=getattr(torch, self.base.dtype) if sharded else None,
            # Drawn in host memory in both modes: the same weights wherever they are quantized, and no draw
            # inflates the device's loading peak.
            draw_on=torch.device("cpu"),
        )
        # The same adapter initialisation in both modes: drawn in host memory (one device's Lightning would draw
        # it on the GPU, FSDP's on the CPU), whatever ran before; peft then moves it to its layer's device.
        torch.manual_seed(0)
        with torch.device("cpu"):
            self.model = add_lora(base, self.lora, self.hparams.gradient_checkpointing, sharded)


class Measure(L.Callback):
    """Per rank: the seconds from set-up to the first step (loading the base, wrapping it), the parameter megabytes
    held, memory at the peak of loading, when training starts and at the peak of training, time and tokens of the
    optimizer steps after the first (warm-up), and the loss of every step.

    On a GPU the memory is ``torch.cuda``'s allocated bytes; on a CPU the resident set, its peak over the process's
    life (so the training peak there includes loading)."""

    def __init__(self, result_file: Path):
        self.result_file = result_file
        self.losses: list[float] = []
        self.micro_losses: list[float] = []
        self.tokens = 0
        self.started = 0.0
        self.set_up = 0.0

    def setup(self, trainer: L.Trainer, module: L.LightningModule, stage: str) -> None:
        self.set_up = time.perf_counter()  # before configure_model: loading and wrapping are timed from here

    def _sync(self, trainer: L.Trainer) -> None:
        if trainer.strategy.root_device.type == "cuda":
            torch.cuda.synchronize()

    def on_train_start(self, trainer: L.Trainer, module: L.LightningModule) -> None:
        self.load_s = time.perf_counter() - self.set_up
        held = sum(p.numel() * p.element_size() for p in trainer.strategy.model.parameters())
        self.held_mb = held / 2**20
        if trainer.strategy.root_device.type == "cuda":
            self._sync(trainer)
            self.load_peak_mb = torch.cuda.max_memory_allocated() / 2**20
            self.start_mb = torch.cuda.memory_allocated() / 2**20
            torch.cuda.reset_peak_memory_stats()
        else:
            self.load_peak_mb, self.start_mb = peak_resident_mb(), resident_bytes() / 2**20

    def on_train_batch_start(self, trainer, module, batch, batch_idx) -> None:
        if trainer.global_step == 1 and not self.started:
            self._sync(trainer)
            self.started = time.perf_counter()
        if self.started:
            self.tokens += int(batch["attention_mask"].sum())

    def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx) -> None:
        # Lightning hands over each micro-batch's loss divided by the batches accumulated: their sum is the mean.
        self.micro_losses.append(float(outputs["loss"]))
        accumulate = trainer.accumulate_grad_batches
        if len(self.micro_losses) % accumulate == 0:
            self.losses.append(sum(self.micro_losses[-accumulate:]))

    def on_train_end(self, trainer: L.Trainer, module: L.LightningModule) -> None:
        self._sync(trainer)
        seconds = time.perf_counter() - self.started
        gpu = trainer.strategy.root_device.type == "cuda"
        peak_mb = torch.cuda.max_memory_allocated() / 2**20 if gpu else peak_resident_mb()
        record = {
            "rank": trainer.global_rank,
            "ranks": trainer.world_size,
            "load_s": self.load_s,
            "held_mb": self.held_mb,
            "load_peak_mb": self.load_peak_mb,
            "start_mb": self.start_mb,
            "peak_mb": peak_mb,
            "steps_timed": trainer.global_step - 1,
            "seconds": seconds,
            "tokens": self.tokens,
            "losses": self.losses,
        }
        with open(self.result_file, "a", encoding="utf-8") as handle:
            handle.write(json.dumps(record) + "\n")
        trainer.strategy.barrier()  # rank 0 exits last, so the parent reads every rank's record


def peak_resident_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # kilobytes on Linux


def run_mode(args: argparse.Namespace) -> None:
    """One fit (``--run MODE``): Lightning re-runs this command for every further rank."""
    from suneung_lit.data.datamodule import MultipleChoiceDataModule

    set_threads()
    gpu = torch.cuda.is_available()
    devices = args.devices or (torch.cuda.device_count() if gpu else 2)
    sharded = args.run == "sharded"
    dtype = "bfloat16" if gpu else "float32"
    L.seed_everything(0, verbose=False)
    tokenizer = ROOT / "artifacts" / "tiny-qwen2"  # the Qwen2.5 tokenizer the presets use
    data = MultipleChoiceDataModule(
        str(tokenizer),
        train_path=str(args.data_dir / "train.csv"),
        max_length=args.max_length,
        train_batch_size=args.batch_size,
        val_fraction=0.05,
    )
    module = PresetQLoRA(
        str(tokenizer),
        base=BaseSettings(quantization="nf4", dtype=dtype, compute_dtype=dtype),
        lora=LoraSettings(dropout=0.0),
        # A schedule of this run's length (the default spans the epoch, so a few steps would barely move the adapter).
        optimization=OptimizationSettings(scheduler_total_steps=args.steps),
        gradient_checkpointing=args.gradient_checkpointing,
    )
    module.preset = args.preset
    trainer = L.Trainer(
        accelerator="gpu" if gpu else "cpu",
        devices=devices if sharded else 1,
        strategy=sharding.LoraFSDPStrategy() if sharded else "auto",
        precision="bf16-mixed" if gpu else "32-true",  # as the GPU configs resolve `auto`
        max_steps=args.steps,
        accumulate_grad_batches=1 if sharded else devices,
        gradient_clip_val=1.0,
        limit_val_batches=0,
        num_sanity_val_steps=0,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        callbacks=[Measure(args.result_file)],
        use_distributed_sampler=False,  # the data module shards batches per rank itself, as the CLI sets
    )
    trainer.fit(module, datamodule=data)


def summarise(records: list[dict]) -> dict:
    """One mode's ranks together: the largest per-rank memory, all ranks' tokens, the losses averaged over ranks."""
    ranks = len(records)
    seconds = max(r["seconds"] for r in records)
    steps = records[0]["steps_timed"]
    losses = [sum(r["losses"][i] for r in records) / ranks for i in range(len(records[0]["losses"]))]
    return {
        "ranks": ranks,
        "load_s": max(r["load_s"] for r in records),
        "held_mb": max(r["held_mb"] for r in records),
        "load_peak_mb": max(r["load_peak_mb"] for r in records),
        "start_mb": max(r["start_mb"] for r in records),
        "peak_mb": max(r["peak_mb"] for r in records),
        "step_s": seconds / max(steps, 1),
        "tokens_per_s": sum(r["tokens"] for r in records) / seconds if seconds else 0.0,
        "losses": losses,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--preset", choices=sorted(PRESETS), default="check", help="Qwen2.5 shape, random 4-bit")
    parser.add_argument("--devices", type=int, help="ranks of the sharded run (default: every GPU; 2 on a CPU)")
    parser.add_argument("--max-length", type=int, default=1024, help="longest prompt in tokens")
    parser.add_argument("--batch-size", type=int, default=1, help="items per batch and rank")
    parser.add_argument("--steps", type=int, default=4, help="optimizer steps; the first is warm-up, not timed")
    parser.add_argument("--gradient-checkpointing", action="store_true")
    parser.add_argument("--modes", nargs="+", choices=MODES, default=list(MODES))
    parser.add_argument("--run", choices=MODES, help=argparse.SUPPRESS)
    parser.add_argument("--result-file", type=Path, help=argparse.SUPPRESS)
    add_data_dir_argument(parser)
    args = parser.parse_args()
    if args.run:
        run_mode(args)
        return

    print(f"{device_name()}; CPU flags: {cpu_flags()}; preset {args.preset}", flush=True)
    if torch.cuda.is_available():
        print(host_quantization_check(), flush=True)
    summaries = {}
    for mode in args.modes:
        with tempfile.TemporaryDirectory() as folder:
            result_file = Path(folder) / "ranks.jsonl"
            command = [sys.executable, __file__, *sys.argv[1:], "--run", mode, "--result-file", str(result_file)]
            finished = subprocess.run(command)
            lines = result_file.read_text(encoding="utf-8").splitlines() if result_file.is_file() else []
            records = [json.loads(line) for line in lines]
        if finished.returncode or not records or len(records) != records[0]["ranks"]:
            # The other mode still runs and reports: a first run on a new machine should not lose both.
            print(f"{mode}: failed (exit {finished.returncode}, {len(records)} rank record(s))", flush=True)
            continue
        summaries[mode] = summary = summarise(records)
        print(
            f"{mode}: {summary['ranks']} rank(s); per rank at most: {summary['load_s']:.0f} s to load and wrap, "
            f"parameters {summary['held_mb']:.0f} MB, loading peak {summary['load_peak_mb']:.0f} MB, "
            f"{summary['start_mb']:.0f} MB as training starts, training peak {summary['peak_mb']:.0f} MB; "
            f"{summary['step_s']:.2f} s/step, {summary['tokens_per_s']:.0f} tokens/s (all ranks); "
            f"losses {[round(x, 4) for x in summary['losses']]}",
            flush=True,
        )
        append_result(
            "sharded 4-bit training (fsdp_lora) vs one device",
            [
                "preset",
                "max length",
                "batch/rank",
                "mode",
                "ranks",
                "parameter MB/rank",
                "loading peak MB/rank",
                "MB/rank at start",
                "training peak MB/rank",
                "s/step",
                "tokens/s",
                "losses",
                "CPU flags",
                "load+wrap s",
            ],  # fmt: skip
            [
                args.preset,
                args.max_length,
                args.batch_size,
                mode,
                summary["ranks"],
                f"{summary['held_mb']:.0f}",
                f"{summary['load_peak_mb']:.0f}",
                f"{summary['start_mb']:.0f}",
                f"{summary['peak_mb']:.0f}",
                f"{summary['step_s']:.2f}",
                f"{summary['tokens_per_s']:.0f}",
                [round(x, 4) for x in summary["losses"]],
                cpu_flags(),
                f"{summary['load_s']:.0f}",
            ],  # fmt: skip
        )
    if len(summaries) == 2:
        single, sharded = summaries["single"]["losses"], summaries["sharded"]["losses"]
        gap = max(abs(a - b) for a, b in zip(single, sharded, strict=True))
        print(f"largest loss difference between the modes over {len(single)} steps: {gap:.2e}")


def host_quantization_check() -> str:
    """One bf16 weight quantized to NF4 in host memory (as ranks load under FSDP) and on the GPU (as one device
    loads): how many packed bytes agree, and how far the GPU's dequantization of each copy is from the weight."""
    import bitsandbytes.functional as F

    weight = (torch.randn(4096, 4096, generator=torch.Generator().manual_seed(0)) * 0.02).to(torch.bfloat16)
    options = dict(blocksize=64, compress_statistics=True, quant_type="nf4", quant_storage=torch.bfloat16)
    host, host_state = F.quantize_4bit(weight, **options)
    device, device_state = F.quantize_4bit(weight.cuda(), **options)
    same = (host.view(torch.uint8).cuda() == device.view(torch.uint8)).float().mean().item()
    host_state.to("cuda")
    errors = [
        (F.dequantize_4bit(packed, state).float() - weight.cuda().float()).abs().max().item()
        for packed, state in ((host.cuda(), host_state), (device, device_state))
    ]
    return (
        f"NF4 of one 4096x4096 weight, host vs GPU: {same:.6f} of the packed bytes equal; largest error of the GPU's "
        f"dequantization: {errors[0]:.4g} from the host copy, {errors[1]:.4g} from the GPU's"
    )


if __name__ == "__main__":
    main()
