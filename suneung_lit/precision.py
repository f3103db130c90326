"""``auto`` precision: the dtype a machine runs fastest without changing answers, chosen once, with the reason.

On a CUDA device bf16 where the card supports it (Ampere and newer), else float16 (V100, T4: Lightning's
``16-mixed`` scales the loss). On a CPU bf16 only with AVX-512 BF16 or AMX, where torch runs it natively (3.4x
float32 for the 1.5B Qwen with AMX, 2.2x with AVX-512 BF16 alone, the same answers: docs/gpu.md, "Precision");
with AVX2 only torch emulates bf16 matmuls, more than 8x slower than float32, so float32. The machine is passed in
as data (``Machine``), so every branch is testable on any machine.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

BF16_CPU_FLAGS = frozenset({"avx512_bf16", "amx_bf16"})
TRAINER_PRECISION = {"bfloat16": "bf16-mixed", "float16": "16-mixed", "float32": "32-true"}


@dataclass(frozen=True)
class Machine:
    """What the choice depends on: a CUDA device (and whether it runs bf16) or the CPU's feature flags."""

    cuda: bool
    cuda_bf16: bool = False
    cuda_name: str = ""
    cpu_flags: frozenset[str] = frozenset()


def cpu_flags(cpuinfo: Path = Path("/proc/cpuinfo")) -> frozenset[str]:
    """The CPU's feature flags (Linux); empty where they cannot be read."""
    try:
        for line in cpuinfo.read_text(encoding="utf-8", errors="replace").splitlines():
            if line.startswith("flags"):
                return frozenset(line.split(":", 1)[1].split())
    except OSError:
        pass
    return frozenset()


def this_machine(accelerator: str = "auto") -> Machine:
    """The machine a run with ``accelerator`` (Lightning's name: auto, cpu, gpu, cuda) will compute on."""
    if accelerator in ("auto", "gpu", "cuda") and torch.cuda.is_available():
        return Machine(True, torch.cuda.is_bf16_supported(), torch.cuda.get_device_name(0))
    return Machine(False, cpu_flags=cpu_flags())


def auto_dtype(machine: Machine) -> tuple[str, str]:
    """(dtype name, the reason) for ``auto`` on ``machine``."""
    if machine.cuda:
        if machine.cuda_bf16:
            return "bfloat16", f"{machine.cuda_name or 'the CUDA device'} supports bf16"
        return "float16", f"{machine.cuda_name or 'the CUDA device'} has no bf16 (V100/T4 class): float16"
    native = sorted(BF16_CPU_FLAGS & machine.cpu_flags)
    if native:
        return "bfloat16", f"the CPU runs bf16 natively ({', '.join(native)})"
    return "float32", "the CPU has no AVX-512 BF16 or AMX, where bf16 matmuls are emulated and far slower: float32"


def resolve_dtype(requested: str, machine: Machine) -> tuple[str, str]:
    """``requested`` as given unless it is ``auto``; then ``auto_dtype``. Explicit values always win."""
    return auto_dtype(machine) if requested == "auto" else (requested, "set in the config")


def trainer_precision(compute_dtype: str) -> str:
    """Lightning's precision for a compute dtype: ``bf16-mixed``, ``16-mixed`` (loss scaling) or ``32-true``."""
    return TRAINER_PRECISION[compute_dtype]
