"""Generation mode end to end: every id gets an answer, the texts and extraction paths are written."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest

from suneung_lit.data.records import write_items
from suneung_lit.data.synthetic import make_items
from suneung_lit.reasoning.generation import _closes_json

from .conftest import real_items, run_in_process
from .test_cli_end_to_end import common_args


def test_a_json_object_is_closed_only_outside_strings():
    assert _closes_json('{"answer": 3, "reasoning": "근거"}')
    assert not _closes_json('{"answer": 3, "reasoning": "괄호 } 안"')
    assert not _closes_json("정답은 3번")


def read_outputs(folder: Path) -> tuple[list[dict], list[dict]]:
    with open(folder / "predictions.csv", encoding="utf-8") as handle:
        predictions = list(csv.DictReader(handle))
    lines = (folder / "reasoning.jsonl").read_text(encoding="utf-8").splitlines()
    return predictions, [json.loads(line) for line in lines]


@pytest.mark.slow
def test_generate_mode_with_the_tiny_model_falls_back_and_writes_every_id(tiny_model_dir, tmp_path, capsys):
    write_items(make_items(8, seed=11, prefix="train"), tmp_path / "train.csv")
    write_items(make_items(6, seed=12, prefix="heldout"), tmp_path / "heldout.csv", "flat")
    args = [*common_args(tiny_model_dir, tmp_path), "--data.template", "cot_json", "--model.answer_mode", "generate"]
    output = run_in_process(["predict", *args, "--model.max_new_tokens", "16"], capsys)
    # A random model writes no parsable answer: every item must come from the fallback, never be dropped.
    assert "answers extracted from 6 generated texts: {'fallback': 6}" in output
    predictions, reasoning = read_outputs(tmp_path / "predictions")
    assert [p["id"] for p in predictions] == [r["id"] for r in reasoning] == [f"heldout-{n:04d}" for n in range(6)]
    assert [r["path"] for r in reasoning] == ["fallback"] * 6
    assert [int(r["answer"]) for r in reasoning] == [int(p["answer"]) for p in predictions]
    # The fallback answer is the best option scored after the generated text, as probabilities.csv records it.
    with open(tmp_path / "predictions" / "probabilities.csv", encoding="utf-8") as handle:
        scored = {row["id"]: row for row in csv.DictReader(handle)}
    for prediction in predictions:
        row = scored[prediction["id"]]
        options = [float(row[f"p{k}"]) for k in range(1, 6) if row.get(f"p{k}") not in (None, "")]
        assert abs(sum(options) - 1) < 1e-4, row  # scored probabilities, not a parsed answer's one-hot
        assert int(prediction["answer"]) == options.index(max(options)) + 1
    assert all(1 <= int(p["answer"]) <= 5 for p in predictions)


@pytest.mark.slow
def test_generate_mode_on_gemma_extracts_answers_from_real_text(gemma_dir, tmp_path, capsys):
    items = [i for i in real_items() if len(i.paragraph) < 300][:2]
    write_items(items, tmp_path / "predict.csv")
    args = [
        *common_args(gemma_dir, tmp_path, "gemma270m.yaml"),
        "--data.predict_path",
        str(tmp_path / "predict.csv"),
        "--data.template",
        "cot_json",
        "--model.answer_mode",
        "generate",
        "--model.max_new_tokens",
        "24",
        # The same float32 generation on every CPU kind, not the config's machine-chosen `auto`.
        "--model.base.dtype", "float32", "--model.base.compute_dtype", "float32", "--trainer.precision", "32-true",
    ]  # fmt: skip
    run_in_process(["predict", *args], capsys)
    predictions, reasoning = read_outputs(tmp_path / "predictions")
    assert [p["id"] for p in predictions] == [item.id for item in items]
    assert any(r["path"] != "fallback" for r in reasoning), reasoning  # a real model writes a parsable answer


def test_generate_mode_validation_logs_accuracy_and_no_digit_loss(tiny_model_dir, tmp_path):
    # Its prompts end where generation starts, not at the answer digit: a "loss" there would mean nothing.
    import lightning as L

    from suneung_lit.backbone import BaseSettings
    from suneung_lit.data.datamodule import MultipleChoiceDataModule
    from suneung_lit.module import QLoRAMultipleChoice

    write_items(make_items(4, seed=13, prefix="val"), tmp_path / "val.csv")
    module = QLoRAMultipleChoice(
        str(tiny_model_dir),
        base=BaseSettings(compute_dtype="float32", dtype="float32"),
        answer_mode="generate",
        max_new_tokens=4,
    )
    datamodule = MultipleChoiceDataModule(
        str(tiny_model_dir), val_path=str(tmp_path / "val.csv"), template="cot_json", max_length=256,
        cache_dir=str(tmp_path / "cache"),
    )  # fmt: skip
    trainer = L.Trainer(accelerator="cpu", logger=False, enable_progress_bar=False, enable_model_summary=False)
    [metrics] = trainer.validate(module, datamodule=datamodule, verbose=False)
    assert "val/acc" in metrics and "val/loss" not in metrics
    assert any(name.startswith("val/extraction/") for name in metrics)
