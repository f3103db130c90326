"""The 4-bit LoRA module: answer-position-only logits, the loss it trains, adapter-only checkpoints."""

from __future__ import annotations

import bitsandbytes as bnb
import lightning as L
import pytest
import torch

from suneung_lit.backbone import BaseSettings, LoraSettings
from suneung_lit.checkpoints import CheckpointMismatchError
from suneung_lit.data.datamodule import MultipleChoiceDataModule
from suneung_lit.data.records import write_items
from suneung_lit.data.synthetic import make_items
from suneung_lit.data.tokenization import option_token_ids
from suneung_lit.module import QLoRAMultipleChoice
from suneung_lit.scoring import answer_logits, batch_option_scores


def tiny_module(model_dir, base: dict | None = None, lora: dict | None = None, **overrides) -> QLoRAMultipleChoice:
    """The tiny model in float32 without LoRA dropout; ``base`` and ``lora`` override single settings."""
    module = QLoRAMultipleChoice(
        str(model_dir),
        base=BaseSettings(**{"compute_dtype": "float32", "dtype": "float32", **(base or {})}),
        lora=LoraSettings(**{"dropout": 0.0, **(lora or {})}),
        **overrides,
    )
    module.configure_model()
    return module


@pytest.fixture()
def data(tiny_model_dir, tmp_path):
    write_items(make_items(24, seed=3), tmp_path / "train.csv")
    write_items(make_items(12, seed=4, prefix="val"), tmp_path / "val.csv")
    datamodule = MultipleChoiceDataModule(
        str(tiny_model_dir),
        train_path=str(tmp_path / "train.csv"),
        val_path=str(tmp_path / "val.csv"),
        max_length=256,
        train_batch_size=4,
        eval_batch_size=6,
    )
    datamodule.setup("fit")
    return datamodule


def _quiet_trainer(**settings) -> L.Trainer:
    return L.Trainer(
        accelerator="cpu",
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        use_distributed_sampler=False,
        **settings,
    )


def test_base_model_is_4bit_with_trainable_lora_only(tiny_model_dir):
    module = tiny_module(tiny_model_dir)
    assert any(isinstance(m, bnb.nn.Linear4bit) for m in module.model.modules())
    trainable = [name for name, p in module.named_parameters() if p.requires_grad]
    assert trainable and all("lora_" in name for name in trainable)


def test_lora_top_layers_puts_adapters_on_the_last_layers_only(tiny_model_dir):
    module = tiny_module(tiny_model_dir, {"quantization": "none"}, {"top_layers": 1})
    adapted = {name.split(".layers.")[1].split(".")[0] for name, _ in module.named_parameters() if "lora_" in name}
    assert adapted == {"1"}  # the tiny model has layers 0 and 1
    with pytest.raises(ValueError, match="model.lora.top_layers must be between 1 and the model's 2 layers, got 3"):
        tiny_module(tiny_model_dir, {"quantization": "none"}, {"top_layers": 3})


def test_lm_head_projects_only_the_answer_position_from_contiguous_rows(tiny_model_dir, data):
    # A strided view of the last position made torch's bf16 matmul copy the head's weight once per row.
    module = tiny_module(tiny_model_dir)
    seen = []
    head = module.model.get_output_embeddings()
    handle = head.register_forward_hook(
        lambda _m, inputs, _o: seen.append((*inputs[0].shape, inputs[0].is_contiguous()))
    )
    batch = next(iter(data.train_dataloader()))
    logits = answer_logits(module.model, batch["input_ids"], batch["attention_mask"])
    handle.remove()
    batch_size, length = batch["input_ids"].shape
    assert length > 50 and seen == [(batch_size, 1, 128, True)]
    assert logits.shape == (batch_size, len(data.tokenizer))


def test_answer_loss_equals_causal_lm_loss_with_everything_but_the_answer_masked(tiny_model_dir, data):
    module = tiny_module(tiny_model_dir)
    module.option_ids = [16, 17, 18, 19, 20]
    row = data.encoded["train"][0]
    prompt = torch.tensor([row["input_ids"]])
    batch = {
        "input_ids": prompt,
        "attention_mask": torch.ones_like(prompt),
        "labels": torch.tensor([row["label"]]),
        "num_choices": torch.tensor([row["num_choices"]]),
        "answer": torch.tensor([row["answer"]]),
    }
    ours = module._loss(*batch_option_scores(module.model, batch, module.option_ids), batch)
    full = torch.cat([prompt, torch.tensor([[row["label"]]])], dim=1)
    masked = torch.full_like(full, -100)
    masked[0, -1] = row["label"]
    reference = module.model(input_ids=full, labels=masked).loss
    torch.testing.assert_close(ours, reference, rtol=1e-4, atol=1e-4)


def test_left_padding_does_not_change_scores(tiny_model_dir, data):
    module = tiny_module(tiny_model_dir)
    module.model.eval()
    batch = next(iter(data.val_dataloader()))
    with torch.no_grad():
        batched = answer_logits(module.model, batch["input_ids"], batch["attention_mask"])
        for i in range(len(batch["id"])):
            keep = batch["attention_mask"][i].bool()
            alone = answer_logits(
                module.model, batch["input_ids"][i, keep][None], batch["attention_mask"][i, keep][None]
            )
            torch.testing.assert_close(batched[i], alone[0], rtol=1e-3, atol=1e-3)


def test_checkpoint_state_holds_only_lora_weights_and_reloads(tiny_model_dir):
    trained = tiny_module(tiny_model_dir)
    with torch.no_grad():
        for p in trained.parameters():
            if p.requires_grad:
                p.add_(0.5)
    state = trained.state_dict()
    assert state and all("lora_" in key for key in state)
    frozen_bytes = sum(t.numel() * t.element_size() for t in trained.model.base_model.state_dict().values())
    assert sum(t.numel() * t.element_size() for t in state.values()) < 0.05 * frozen_bytes
    fresh = tiny_module(tiny_model_dir)
    fresh.load_state_dict(state)
    for key, value in fresh.state_dict().items():
        torch.testing.assert_close(value, state[key])


def test_checkpoint_from_another_lora_shape_is_refused(tiny_model_dir):
    state = tiny_module(tiny_model_dir, lora={"r": 4}).state_dict()
    with pytest.raises(CheckpointMismatchError, match="LoRA r=8"):
        tiny_module(tiny_model_dir, lora={"r": 8}).load_state_dict(state)


def test_avx512bf16_repack_is_switched_off_before_training(tiny_model_dir, monkeypatch):
    """Regression: on AVX512-BF16 CPUs, bitsandbytes repacks 4-bit weights in an eval forward without grad and
    the next training forward fails. The probe is patched to report such a CPU, whatever this one is."""
    import bitsandbytes.nn.modules

    monkeypatch.setattr(bitsandbytes.nn.modules, "has_avx512bf16", lambda: True)
    module = tiny_module(tiny_model_dir)
    layers = [m for m in module.modules() if isinstance(m, bnb.nn.Linear4bit)]
    assert layers and not any(m.support_avx512bf16_for_cpu for m in layers)


def test_fit_after_sanity_validation_on_cpu_4bit(tiny_model_dir, data):
    """Lightning's sanity-check validation (eval, no grad) followed by training steps, on the 4-bit CPU path."""
    module = QLoRAMultipleChoice(str(tiny_model_dir), base=BaseSettings(compute_dtype="float32", dtype="float32"))
    trainer = _quiet_trainer(max_steps=3, num_sanity_val_steps=1, limit_val_batches=1)
    trainer.fit(module, data)
    assert trainer.global_step == 3
    assert all(not m.support_avx512bf16_for_cpu for m in module.modules() if isinstance(m, bnb.nn.Linear4bit))


def test_validation_reports_accuracy_per_source(tiny_model_dir, tmp_path):
    from dataclasses import replace

    items = make_items(12, seed=5, prefix="val")
    labelled = [replace(item, metadata={"source": "kmmlu" if n % 3 else "click"}) for n, item in enumerate(items)]
    write_items(make_items(8, seed=6), tmp_path / "train.csv")
    write_items(labelled, tmp_path / "val.csv")
    datamodule = MultipleChoiceDataModule(
        str(tiny_model_dir),
        train_path=str(tmp_path / "train.csv"),
        val_path=str(tmp_path / "val.csv"),
        max_length=256,
        eval_batch_size=5,
    )
    module = QLoRAMultipleChoice(str(tiny_model_dir), base=BaseSettings(compute_dtype="float32", dtype="float32"))
    trainer = _quiet_trainer()
    [metrics] = trainer.validate(module, datamodule)
    assert datamodule.groups == ["click", "kmmlu"]
    overall, click, kmmlu = metrics["val/acc"], metrics["val/acc/click"], metrics["val/acc/kmmlu"]
    assert overall == pytest.approx((4 * click + 8 * kmmlu) / 12, abs=1e-6)


def test_checkpoint_from_another_base_model_of_the_same_shape_is_refused(tiny_model_dir, tmp_path):
    from suneung_lit.tiny import build_tiny_model

    other = build_tiny_model(tmp_path / "other", seed=1)  # same architecture, other weights
    checkpoint: dict = {}
    tiny_module(tiny_model_dir).on_save_checkpoint(checkpoint)
    tiny_module(tiny_model_dir).on_load_checkpoint(checkpoint)  # the same base loads
    unquantized_bf16 = QLoRAMultipleChoice(
        str(tiny_model_dir), base=BaseSettings(quantization="none", dtype="bfloat16")
    )
    unquantized_bf16.on_load_checkpoint(checkpoint)  # the same base loaded another way loads too
    with pytest.raises(CheckpointMismatchError, match="differs \\(embedding_sha256\\)"):
        tiny_module(other).on_load_checkpoint(checkpoint)


def test_predict_runs_unquantized_weights_in_compute_dtype(tiny_model_dir, data):
    """Training keeps norms, embeddings and LoRA in float32; predict casts them to compute_dtype, 4-bit untouched."""
    module = tiny_module(tiny_model_dir, {"compute_dtype": "bfloat16"})
    assert torch.float32 in {p.dtype for p in module.model.parameters()}
    rotary = {name: b.dtype for name, b in module.model.named_buffers()}
    outputs = _quiet_trainer().predict(module, data.val_dataloader())
    assert {p.dtype for p in module.model.parameters()} == {torch.bfloat16, torch.uint8}
    assert {name: b.dtype for name, b in module.model.named_buffers()} == rotary
    assert sum(len(batch["id"]) for batch in outputs) == 12
    with pytest.raises(RuntimeError, match="cannot be trained further"):
        _quiet_trainer(max_steps=1).fit(module, data)


def test_validate_run_casts_but_validation_inside_fit_does_not(tiny_model_dir, data):
    training = tiny_module(tiny_model_dir, {"compute_dtype": "bfloat16"})
    _quiet_trainer(max_steps=1, limit_val_batches=1, num_sanity_val_steps=1).fit(training, data)
    assert torch.float32 in {p.dtype for p in training.model.parameters() if p.requires_grad}
    validating = tiny_module(tiny_model_dir, {"compute_dtype": "bfloat16"})
    _quiet_trainer(limit_val_batches=1).validate(validating, data)
    assert {p.dtype for p in validating.model.parameters()} == {torch.bfloat16, torch.uint8}


def test_inference_cast_can_be_switched_off(tiny_model_dir, data):
    module = tiny_module(tiny_model_dir, {"compute_dtype": "bfloat16"}, inference_in_compute_dtype=False)
    _quiet_trainer().predict(module, data.val_dataloader())
    # (bitsandbytes itself casts a 4-bit layer's bias to the compute dtype on its first forward)
    kept = {n: p.dtype for n, p in module.model.named_parameters() if any(k in n for k in ("lora_", "norm", "embed"))}
    assert kept and set(kept.values()) == {torch.float32}


def test_dynamic_int8_swaps_the_base_linears_keeps_lora_and_head_float_and_refuses_to_train(tiny_model_dir, data):
    module = tiny_module(tiny_model_dir, {"quantization": "dynamic_int8"})
    quantized = [n for n, m in module.model.named_modules() if isinstance(m, torch.ao.nn.quantized.dynamic.Linear)]
    assert quantized and not any("lora_" in n or "lm_head" in n for n in quantized)
    assert all(type(m) is not torch.nn.Linear for n, m in module.model.named_modules() if n.endswith("base_layer"))
    plain = tiny_module(tiny_model_dir, {"quantization": "none"})
    module.option_ids = plain.option_ids = option_token_ids(data.tokenizer, 5)
    batch = next(iter(data.val_dataloader()))
    with torch.no_grad():
        expected = batch_option_scores(plain.model, batch, plain.option_ids)[1].softmax(-1)
        close = batch_option_scores(module.model, batch, module.option_ids)[1].softmax(-1)
    torch.testing.assert_close(close, expected, rtol=0, atol=0.02)
    with pytest.raises(RuntimeError, match="dynamic_int8 is for validate/test/predict"):
        _quiet_trainer(max_steps=1).fit(module, data)
