"""``auto`` precision follows the machine: every branch tested here with the machine given as data."""

from __future__ import annotations

from pathlib import Path

import pytest

from suneung_lit.backbone import BaseSettings
from suneung_lit.precision import Machine, auto_dtype, cpu_flags, resolve_dtype, this_machine, trainer_precision

A100 = Machine(cuda=True, cuda_bf16=True, cuda_name="NVIDIA A100-SXM4-80GB")
V100 = Machine(cuda=True, cuda_bf16=False, cuda_name="Tesla V100-SXM2-32GB")
AVX2 = Machine(cuda=False, cpu_flags=frozenset({"sse4_2", "avx", "avx2", "fma"}))
AVX512_BF16 = Machine(cuda=False, cpu_flags=frozenset({"avx2", "avx512f", "avx512_bf16", "avx512_vnni"}))
AMX = Machine(cuda=False, cpu_flags=frozenset({"avx2", "avx512f", "amx_bf16", "amx_tile"}))


@pytest.mark.parametrize(
    ("machine", "dtype", "precision"),
    [
        (A100, "bfloat16", "bf16-mixed"),
        (V100, "float16", "16-mixed"),  # no bf16 on the card: float16 with loss scaling
        (AVX2, "float32", "32-true"),  # bf16 is emulated there, more than 8x slower
        (AVX512_BF16, "bfloat16", "bf16-mixed"),
        (AMX, "bfloat16", "bf16-mixed"),
    ],
)
def test_auto_picks_the_dtype_each_machine_runs_natively(machine, dtype, precision):
    chosen, reason = auto_dtype(machine)
    assert chosen == dtype and reason
    assert trainer_precision(chosen) == precision


def test_the_reason_names_what_decided():
    assert "V100" in auto_dtype(V100)[1] and "avx512_bf16" in auto_dtype(AVX512_BF16)[1]
    assert "AVX-512 BF16" in auto_dtype(AVX2)[1]


@pytest.mark.parametrize("explicit", ["bfloat16", "float16", "float32"])
def test_an_explicit_dtype_always_wins(explicit):
    for machine in (A100, V100, AVX2, AMX):
        assert resolve_dtype(explicit, machine) == (explicit, "set in the config")


def test_cpu_flags_are_read_from_cpuinfo_and_missing_cpuinfo_gives_none(tmp_path: Path):
    info = tmp_path / "cpuinfo"
    info.write_text("processor\t: 0\nflags\t\t: fpu avx2 avx512_bf16\n\nprocessor\t: 1\nflags\t\t: fpu\n")
    assert cpu_flags(info) == {"fpu", "avx2", "avx512_bf16"}
    assert cpu_flags(tmp_path / "missing") == frozenset()


def test_auto_settings_resolve_once_for_this_machine_and_are_saved_resolved():
    settings = BaseSettings(quantization="none", dtype="auto", compute_dtype="auto")
    expected, _ = auto_dtype(this_machine())
    assert (settings.dtype, settings.compute_dtype) == (expected, expected)
    assert settings.torch_compute_dtype.is_floating_point  # a real torch dtype, never "auto"


def test_the_cli_sets_an_unset_trainer_precision_from_the_compute_dtype(tiny_model_dir, tmp_path, capsys):
    from .test_input_shapes import cli

    output = cli(tmp_path, tiny_model_dir, "validate", "--trainer.precision", "null",
                 "--model.base.compute_dtype", "float32", capsys=capsys)  # fmt: skip
    assert "trainer.precision unset -> 32-true (compute dtype float32: set in the config)" in output
