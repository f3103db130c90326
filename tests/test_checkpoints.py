"""Adapter-only checkpoints without a Trainer: what a checkpoint keeps, and what loading refuses."""

from __future__ import annotations

import pytest
import torch

from suneung_lit.backbone import BaseSettings, LoraSettings
from suneung_lit.checkpoints import (
    CheckpointMismatchError,
    base_model_fingerprint,
    check_same_base,
    load_trainable_state,
    trainable_state,
)
from suneung_lit.module import QLoRAMultipleChoice


def lora_model(model_dir, **lora) -> torch.nn.Module:
    module = QLoRAMultipleChoice(
        str(model_dir), base=BaseSettings(quantization="none", dtype="float32"), lora=LoraSettings(dropout=0.0, **lora)
    )
    module.configure_model()
    return module.model


def test_trainable_state_keeps_the_adapters_and_loads_back_into_a_fresh_model(tiny_model_dir):
    trained = lora_model(tiny_model_dir)
    with torch.no_grad():
        for p in trained.parameters():
            p.add_(1.0) if p.requires_grad else None
    state = trainable_state(trained, prefix="model.")
    assert state and all(key.startswith("model.") and "lora_" in key for key in state)
    fresh = lora_model(tiny_model_dir)
    load_trainable_state(fresh, trainable_state(trained), "the tiny model")
    for name, value in trainable_state(fresh).items():
        torch.testing.assert_close(value, state[f"model.{name}"])


def test_loading_names_how_many_weights_are_missing_unexpected_or_misshaped(tiny_model_dir):
    state = trainable_state(lora_model(tiny_model_dir, r=4))
    with pytest.raises(CheckpointMismatchError, match=r"\(tiny r=8\): 0 missing, 0 unexpected, \d+ with other shapes"):
        load_trainable_state(lora_model(tiny_model_dir, r=8), state, "tiny r=8")
    one_layer = trainable_state(lora_model(tiny_model_dir, top_layers=1))
    with pytest.raises(CheckpointMismatchError, match=r"[1-9]\d* missing, 0 unexpected"):
        load_trainable_state(lora_model(tiny_model_dir), one_layer, "tiny")


def test_fingerprint_ignores_how_the_base_was_loaded_but_not_its_weights(tiny_model_dir, tmp_path):
    from suneung_lit.tiny import build_tiny_model

    float32 = base_model_fingerprint(lora_model(tiny_model_dir), "here")
    module = QLoRAMultipleChoice(str(tiny_model_dir), base=BaseSettings(quantization="none", dtype="bfloat16"))
    module.configure_model()
    check_same_base(float32, base_model_fingerprint(module.model, "elsewhere"))
    other = base_model_fingerprint(lora_model(build_tiny_model(tmp_path / "other", seed=1)), "other")
    assert other["config_sha256"] == float32["config_sha256"]
    with pytest.raises(CheckpointMismatchError, match="trained on base model 'here'.*differs \\(embedding_sha256\\)"):
        check_same_base(float32, other)
