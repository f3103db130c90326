"""Sharded LoRA training (``--trainer.strategy fsdp_lora``): two gloo ranks on the CPU each hold about half of the
model, and train the adapter a single process trains on the same batches; the sharded checkpoint and the exported
adapter load into a run on one device."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from suneung_lit.backbone import loading_device
from suneung_lit.data.records import write_items
from suneung_lit.data.synthetic import make_items
from suneung_lit.sharding import layer_class_names, lora_wrap_policy, quant_storage, unwrapped_name

from .conftest import run_in_process
from .test_cli_end_to_end import common_args, run_cli
from .test_input_shapes import logged

SHARDED = ["--trainer.strategy", "fsdp_lora", "--trainer.devices", "2"]
HOLDS = re.compile(r"fsdp_lora: rank (\d) of 2 holds ([\d,]+) of ([\d,]+) parameter elements")


def test_quant_storage_auto_is_the_compute_dtype_only_when_sharded():
    assert quant_storage("auto", "bfloat16", sharded=True) == "bfloat16"
    assert quant_storage("auto", "float32", sharded=True) == "float32"
    assert quant_storage("auto", "bfloat16", sharded=False) == "uint8"
    assert quant_storage("float16", "bfloat16", sharded=True) == "float16"  # an explicit value wins


def test_the_wrapping_policy_gives_each_layer_and_each_lora_matrix_a_unit_of_its_own(tiny_model_dir):
    from suneung_lit.backbone import BaseSettings, LoraSettings, add_lora, load_base_model

    base = BaseSettings(quantization="none", dtype="float32", compute_dtype="float32")
    model = add_lora(load_base_model(str(tiny_model_dir), torch.device("cpu"), base), LoraSettings(r=4))
    policy = lora_wrap_policy(layer_class_names(model))
    wrapped = {name for name, module in model.named_modules() if policy(module, recurse=False, nonwrapped_numel=0)}
    layers = {name for name, module in model.named_modules() if type(module).__name__ == "Qwen2DecoderLayer"}
    lora = {name for name, module in model.named_modules() if re.search(r"\.lora_[AB]\.default$", name)}
    assert layers and lora and wrapped == layers | lora
    # What stays in a layer's own unit is frozen throughout, so no flat parameter mixes trainable and frozen.
    for name in layers:
        rest = [p for n, p in model.get_submodule(name).named_parameters() if "lora_" not in n]
        assert rest and not any(p.requires_grad for p in rest)
    assert unwrapped_name("model._fsdp_wrapped_module.base_model._fsdp_wrapped_module.w") == "model.base_model.w"


def test_a_base_loads_where_it_runs_on_one_device_and_in_host_memory_under_fsdp():
    gpu, host = torch.device("cuda", 1), torch.device("cpu")
    assert loading_device(gpu, quantized=True, sharded=False) == gpu  # bitsandbytes quantizes where it loads
    # Sharded: no card ever holds the whole model; FSDP moves each unit's shard to the card as it wraps it.
    assert loading_device(gpu, quantized=True, sharded=True) == host
    assert loading_device(gpu, quantized=False, sharded=True) == host
    assert loading_device(gpu, quantized=False, sharded=False) == host  # the strategy moves it


def test_under_bf16_mixed_precision_buffers_keep_their_dtype_and_weights_compute_in_bf16():
    from lightning.pytorch.plugins.precision.fsdp import FSDPPrecision
    from torch.distributed.fsdp import MixedPrecision

    from suneung_lit.sharding import LoraFSDPStrategy

    strategy = LoraFSDPStrategy(precision_plugin=FSDPPrecision("bf16-mixed"))
    config = strategy.mixed_precision_config
    assert config.param_dtype == torch.bfloat16 and config.buffer_dtype is None  # rotary frequencies stay float32
    # Lightning's own choice, which this replaces, rounds every buffer to bf16.
    assert FSDPPrecision("bf16-mixed").mixed_precision_config.buffer_dtype == torch.bfloat16
    given = MixedPrecision(param_dtype=torch.float16, buffer_dtype=torch.float16)
    assert LoraFSDPStrategy(mixed_precision=given).mixed_precision_config is given  # what a user sets, as set


@pytest.fixture()
def work(tmp_path) -> Path:
    write_items(make_items(64, seed=21, prefix="train"), tmp_path / "train.csv", "competition")
    write_items(make_items(16, seed=22, prefix="heldout"), tmp_path / "heldout.csv", "flat")
    return tmp_path


def fit_args(model_dir: Path, work: Path, quantization: str) -> list[str]:
    # Dropout off and no balancing: the two ranks and the single process then draw nothing at random.
    return [
        *common_args(model_dir, work),
        "--model.base.quantization",
        quantization,
        "--model.lora.dropout",
        "0",
        "--data.train_batch_size",
        "4",
        "--trainer.max_steps",
        "4",
        "--model.optimization.scheduler_total_steps",
        "4",
        "--trainer.limit_val_batches",
        "1",
        "--checkpoint.monitor",
        "null",
    ]


@pytest.mark.slow
@pytest.mark.parametrize("quantization", ["none", "nf4"])
def test_two_sharded_ranks_train_the_adapter_one_process_trains_and_their_checkpoint_loads_on_one_device(
    tiny_model_dir, work, capsys, quantization
):
    sharded_dir, single_dir = work / "sharded", work / "single"
    for folder in (sharded_dir, single_dir):
        folder.mkdir()
        for name in ("train.csv", "heldout.csv"):
            (folder / name).write_bytes((work / name).read_bytes())
    # Rank r takes every second batch of the single-process order, and FSDP averages the two ranks' gradients:
    # one step of the pair is one step of a single process accumulating the same two batches.
    output = run_cli("fit", *fit_args(tiny_model_dir, sharded_dir, quantization), *SHARDED, cwd=sharded_dir)
    run_in_process(
        ["fit", *fit_args(tiny_model_dir, single_dir, quantization), "--trainer.accumulate_grad_batches", "2"], capsys
    )
    holds = {int(rank): (int(held.replace(",", "")), int(total.replace(",", ""))) for rank, held, total in
             HOLDS.findall(output)}  # fmt: skip
    assert sorted(holds) == [0, 1], output[-3000:]
    total = holds[0][1]
    for held, _ in holds.values():
        assert 0.45 < held / total < 0.55
    assert total <= holds[0][0] + holds[1][0] <= 1.01 * total  # the two halves cover the model (with padding)

    sharded = load_file(sharded_dir / "adapter" / "adapter_model.safetensors")
    single = load_file(single_dir / "adapter" / "adapter_model.safetensors")
    assert sharded.keys() == single.keys()
    for key in single:
        torch.testing.assert_close(sharded[key], single[key], rtol=1e-4, atol=1e-5)
    assert any(single[k].abs().max() > 0 for k in single if "lora_B" in k)  # training moved the adapter

    # The sharded run's checkpoint holds the adapter under single-device names and the single run's values.
    on_sharded, on_single = (torch.load(d / "checkpoints" / "last.ckpt", weights_only=False)["state_dict"]
                             for d in (sharded_dir, single_dir))  # fmt: skip
    assert on_sharded.keys() == on_single.keys() and len(on_single) == len(single)
    for key in on_single:
        torch.testing.assert_close(on_sharded[key], on_single[key], rtol=1e-4, atol=1e-5)
    if quantization == "nf4":  # and a run on one device loads it through the command line
        checkpoint = sharded_dir / "checkpoints" / "last.ckpt"
        validated = run_in_process(
            ["validate", *common_args(tiny_model_dir, sharded_dir), "--model.base.quantization", quantization,
             "--data.val_path", str(work / "heldout.csv"), "--ckpt_path", str(checkpoint)], capsys)  # fmt: skip
        assert 0 <= logged(validated, "val/acc") <= 1
