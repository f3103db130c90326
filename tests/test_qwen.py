"""Qwen2.5-Coder-1.5B-Instruct, a real instruct model of the 32B target's family, through the CLI on a CPU.

Gemma 3 270M answers one position whatever the prompt; this model reads. Zero-shot, through `predict` with the
shipped configs/qwen1.5b.yaml (dtype `auto`: bf16 on CPUs that run it natively, else float32; the tokenizer's
chat template, the 32B prompt).
"""

from __future__ import annotations

import csv
import re

import pytest

from suneung_lit.data.records import write_items
from suneung_lit.data.synthetic import make_items

from .conftest import REPO, real_items, run_in_process
from .test_cli_end_to_end import common_args

pytestmark = pytest.mark.slow


def test_qwen_zero_shot_reads_the_paragraph_and_predicts_every_real_item(qwen_dir, tmp_path, capsys):
    # Each synthetic paragraph states the answer's number: a model that reads it is right, one that does not is
    # at the best constant predictor (at most 0.4 on these items). The real items check every id comes back.
    synthetic = make_items(10, seed=31, prefix="val")
    real = real_items()[:2]
    write_items([*synthetic, *real], tmp_path / "predict.csv")
    args = [
        *common_args(qwen_dir, tmp_path, "qwen1.5b.yaml"),
        "--data.predict_path", str(tmp_path / "predict.csv"),
        "--data.corrections_path", str(REPO / "data" / "corrections" / "generationfornlp_train.csv"),
    ]  # fmt: skip
    output = run_in_process(["predict", *args], capsys)
    with open(tmp_path / "predictions" / "probabilities.csv", encoding="utf-8") as file:
        rows = list(csv.DictReader(file))
    assert [row["id"] for row in rows] == [item.id for item in [*synthetic, *real]]
    for row in rows:
        assert abs(sum(float(value or 0) for key, value in row.items() if re.fullmatch(r"p\d", key)) - 1) < 1e-3, row
    predicted = {row["id"]: int(row["prediction"]) for row in rows}
    accuracy = sum(predicted[item.id] == item.answer for item in synthetic) / len(synthetic)
    constant = max(sum(item.answer == position for item in synthetic) for position in range(1, 6)) / len(synthetic)
    assert constant <= 0.4 and accuracy >= 0.8, output[-2000:]
