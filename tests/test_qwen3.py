"""Qwen3: its own chat template, thinking switched by ``data.enable_thinking``, and the shipped Qwen3 configs run
end to end on a tiny random Qwen3 model built offline (Qwen3 shares Qwen2.5's vocabulary)."""

from __future__ import annotations

import csv
import hashlib
import re
from pathlib import Path

import pytest
from transformers import AutoConfig, AutoTokenizer

from suneung_lit.data.datamodule import MultipleChoiceDataModule
from suneung_lit.data.records import write_items
from suneung_lit.data.synthetic import make_items
from suneung_lit.reasoning.extraction import extract_answer
from suneung_lit.tiny import QWEN3_CHAT_TEMPLATE, build_tiny_model

from .conftest import REPO, run_in_process

# Recorded in suneung_lit/data/chat_templates/README.md: the release's template, byte for byte.
QWEN3_TEMPLATE_SHA256 = "a55ee1b1660128b7098723e0abcd92caa0788061051c62d51cbe87d9cf1974d8"


@pytest.fixture(scope="module")
def qwen3_dir(tmp_path_factory) -> Path:
    return build_tiny_model(tmp_path_factory.mktemp("tiny-qwen3"), family="qwen3")


def test_the_tiny_qwen3_model_has_qwen3s_layers_tokens_and_unedited_template(qwen3_dir):
    assert AutoConfig.from_pretrained(qwen3_dir).model_type == "qwen3"
    tokenizer = AutoTokenizer.from_pretrained(qwen3_dir)
    assert tokenizer.convert_tokens_to_ids(["<think>", "</think>"]) == [151667, 151668]
    assert hashlib.sha256(QWEN3_CHAT_TEMPLATE.read_bytes()).hexdigest() == QWEN3_TEMPLATE_SHA256
    assert tokenizer.chat_template == QWEN3_CHAT_TEMPLATE.read_text(encoding="utf-8")


def encoded_prompt(model_dir: Path, tmp_path: Path, enable_thinking: bool | None) -> tuple[str, list[int]]:
    write_items(make_items(1, seed=3, prefix="q"), tmp_path / "one.csv")
    datamodule = MultipleChoiceDataModule(
        str(model_dir), predict_path=str(tmp_path / "one.csv"), enable_thinking=enable_thinking,
        cache_dir=str(tmp_path / f"cache-{enable_thinking}"),
    )  # fmt: skip
    datamodule.setup("predict")
    ids = datamodule.encoded["predict"]["input_ids"][0]
    return datamodule.tokenizer.decode(ids), ids


@pytest.mark.parametrize(
    ("enable_thinking", "ending"),
    [
        (False, "<|im_start|>assistant\n<think>\n\n</think>\n\n"),
        (True, "<|im_start|>assistant\n"),
        (None, "<|im_start|>assistant\n"),
    ],
    ids=["thinking off: an empty think block, then the answer digit", "thinking on", "the template's default"],
)
def test_the_prompt_ends_where_qwen3s_template_puts_the_assistant_turn(qwen3_dir, tmp_path, enable_thinking, ending):
    text, ids = encoded_prompt(qwen3_dir, tmp_path, enable_thinking)
    assert text.endswith(ending), repr(text[-80:])
    assert text.count("<think>") == (1 if enable_thinking is False else 0)
    if enable_thinking is False:  # </think> is one token, as in Qwen3's own vocabulary; the answer digit comes next
        assert 151668 in ids[-4:]


def test_the_answer_is_read_after_the_thinking_block():
    thought = '<think>\n{"answer": 2}일 수도 있지만 3번이 맞다.\n</think>\n\n{"answer": 3}'
    assert (extract_answer(thought, 5).answer, extract_answer(thought, 5).path) == (3, "json")
    assert extract_answer('<think>\n{"answer": 2} 아직 생각 중', 5).path == "fallback"  # never closed: no answer
    assert extract_answer('{"answer": 4}', 5).answer == 4


@pytest.mark.slow
@pytest.mark.parametrize("config", ["qwen3-32b.yaml"])  # qwen3-14b.yaml differs in names; test_configs parses it
def test_a_shipped_qwen3_config_fits_validates_and_predicts_on_the_tiny_qwen3_model(
    qwen3_dir, tmp_path, config, capsys
):
    write_items(make_items(16, seed=11, prefix="train"), tmp_path / "train.csv")
    write_items(make_items(6, seed=12, prefix="heldout"), tmp_path / "heldout.csv", "flat")
    args = [
        "--config", str(REPO / "configs" / config), "--model.model_name_or_path", str(qwen3_dir),
        "--data.train_path", str(tmp_path / "train.csv"), "--data.val_path", str(tmp_path / "heldout.csv"),
        "--data.predict_path", str(tmp_path / "heldout.csv"), "--data.max_length", "512", "--data.num_workers", "0",
        "--data.corrections_path", "null",  # reviewed fixes of the competition train ids, not of these items
        "--checkpoint.dirpath", str(tmp_path / "checkpoints"), "--prediction_writer.output_dir",
        str(tmp_path / "predictions"), "--adapter_export.output_dir", str(tmp_path / "adapter"),
        "--trainer.default_root_dir", str(tmp_path), "--trainer.enable_progress_bar", "false",
        # The GPU recipe on a CPU: the config's 4-bit NF4 stays; the dtype follows the machine (auto).
        "--trainer.accelerator", "cpu", "--trainer.accumulate_grad_batches", "2",
    ]  # fmt: skip
    run_in_process(["fit", *args, "--trainer.max_steps", "2", "--trainer.val_check_interval", "4"], capsys)
    last = tmp_path / "checkpoints" / "last.ckpt"
    assert last.is_file() and (tmp_path / "adapter" / "adapter_model.safetensors").is_file()
    validated = run_in_process(["validate", *args, "--ckpt_path", str(last)], capsys)
    assert re.search(r"val/acc\s*│\s*[0-9.]+", validated), validated[-2000:]
    run_in_process(["predict", *args, "--ckpt_path", str(last)], capsys)
    with open(tmp_path / "predictions" / "predictions.csv", encoding="utf-8") as handle:
        assert [row["id"] for row in csv.DictReader(handle)] == [f"heldout-{n:04d}" for n in range(6)]
