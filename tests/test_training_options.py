"""Each training option a config can name does what it says on the tiny model, on the CPU where bitsandbytes can."""

from __future__ import annotations

import math
from typing import get_args

import pytest
import torch

from suneung_lit.backbone import BaseSettings, LoraSettings, add_lora, load_base_model
from suneung_lit.optimization import OptimizationSettings, OptimizerChoice, build_optimizer

CPU = torch.device("cpu")


def lora_model(model_dir, quantization: str = "none", **lora):
    base = load_base_model(str(model_dir), CPU, BaseSettings(quantization=quantization, dtype="float32",
                                                              compute_dtype="float32"))  # fmt: skip
    return add_lora(base, LoraSettings(dropout=0.0, **lora))


def answer_loss(model, ids: torch.Tensor) -> torch.Tensor:
    """Next-token loss of the last position: the shape of the package's answer-token loss."""
    logits = model(input_ids=ids[:, :-1], logits_to_keep=1).logits[:, -1]
    return torch.nn.functional.cross_entropy(logits.float(), ids[:, -1])


def few_steps(model, optimizer, steps: int = 5) -> tuple[float, float]:
    ids = torch.tensor([[5, 17, 99, 1000, 16], [7, 8, 9, 10, 18]])
    with torch.no_grad():
        first = float(answer_loss(model, ids))
    for _ in range(steps):
        optimizer.zero_grad()
        answer_loss(model, ids).backward()
        optimizer.step()
    with torch.no_grad():
        return first, float(answer_loss(model, ids))


@pytest.mark.parametrize("choice", get_args(OptimizerChoice))
def test_each_optimizer_choice_is_the_named_optimizer_and_lowers_the_loss(tiny_model_dir, choice):
    import bitsandbytes as bnb

    model = lora_model(tiny_model_dir)
    trainable = [p for p in model.parameters() if p.requires_grad]
    optimizer = build_optimizer(trainable, OptimizationSettings(optimizer=choice, learning_rate=5e-3))
    expected = {
        "adamw": torch.optim.AdamW,
        "adamw_8bit": bnb.optim.AdamW8bit,
        "paged_adamw_8bit": bnb.optim.PagedAdamW8bit,
        "paged_adamw_32bit": bnb.optim.PagedAdamW32bit,
    }[choice]
    assert type(optimizer) is expected
    before = [p.detach().clone() for p in trainable]
    first, last = few_steps(model, optimizer)  # paged variants fall back to unpaged state on a CPU
    assert any(not torch.equal(a, b) for a, b in zip(before, trainable, strict=True))
    assert last < first


def test_rslora_scales_the_adapter_by_alpha_over_the_square_root_of_the_rank(tiny_model_dir):
    plain = lora_model(tiny_model_dir, r=16, alpha=16)
    stabilised = lora_model(tiny_model_dir, r=16, alpha=16, use_rslora=True)
    layer = "base_model.model.model.layers.0.self_attn.q_proj"
    assert plain.get_submodule(layer).scaling["default"] == pytest.approx(16 / 16)
    assert stabilised.get_submodule(layer).scaling["default"] == pytest.approx(16 / math.sqrt(16))


def test_dora_trains_a_magnitude_vector_beside_the_low_rank_update(tiny_model_dir):
    model = lora_model(tiny_model_dir, use_dora=True)
    magnitudes = {n: p for n, p in model.named_parameters() if "lora_magnitude_vector" in n}
    assert magnitudes and all(p.requires_grad for p in magnitudes.values())
    before = {n: p.detach().clone() for n, p in magnitudes.items()}
    trainable = [p for p in model.parameters() if p.requires_grad]
    first, last = few_steps(model, torch.optim.AdamW(trainable, lr=5e-3))
    assert last < first and any(not torch.equal(before[n], p) for n, p in magnitudes.items())


@pytest.mark.parametrize("quantization", ["nf4", "fp4", "int8"])
def test_each_bitsandbytes_quantization_loads_its_layer_type_and_trains_on_the_cpu(tiny_model_dir, quantization):
    import bitsandbytes as bnb

    model = lora_model(tiny_model_dir, quantization)
    base = model.get_submodule("base_model.model.model.layers.0.mlp.down_proj").base_layer
    if quantization == "int8":
        assert isinstance(base, bnb.nn.Linear8bitLt) and base.weight.dtype == torch.int8
    else:
        assert isinstance(base, bnb.nn.Linear4bit) and base.weight.quant_state.quant_type == quantization
    trainable = [p for p in model.parameters() if p.requires_grad]
    first, last = few_steps(model, torch.optim.AdamW(trainable, lr=5e-3))
    assert last < first
