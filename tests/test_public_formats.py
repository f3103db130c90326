"""A few items of each public format the converters read, converted and run through validate and predict.

Provenance (tests/fixtures/README.md): the CLIcK records are verbatim excerpts of the public release; the KICE,
KMMLU, HAE-RAE and CSAT-QA items are rebuilt by hand in their releases' shapes, because those licences (KICE's
copyright, CC BY-ND, CC BY-NC-ND) do not allow shipping converted copies.
"""

from __future__ import annotations

import csv
from pathlib import Path

import pytest

from suneung_lit.data.__main__ import main as data_main
from suneung_lit.data.records import load_items

from .conftest import FIXTURES
from .test_data_tools import CSATQA_INSTRUCTIONS
from .test_input_shapes import cli, logged, predicted_ids

pytestmark = pytest.mark.slow


def csatqa_workbook(folder: Path) -> list[Path]:
    import openpyxl

    workbook = openpyxl.Workbook()
    workbook.active.append(["instruction", "answer"])
    for instruction, answer in zip(CSATQA_INSTRUCTIONS[:2], [3, 2], strict=True):
        workbook.active.append([instruction, answer])
    workbook.save(folder / "csatqa.xlsx")
    return [folder / "csatqa.xlsx"]


SOURCES = {
    "kice": lambda folder: [FIXTURES / "kice.json"],
    "click": lambda folder: sorted((FIXTURES / "click_release").rglob("*.json")),
    "kmmlu": lambda folder: [FIXTURES / "kmmlu.csv"],
    "haerae": lambda folder: [FIXTURES / "haerae.csv"],
    "csatqa": csatqa_workbook,
}


@pytest.mark.parametrize("fmt", list(SOURCES))
def test_each_public_format_converts_then_validates_and_predicts_every_item(fmt, tiny_model_dir, tmp_path, capsys):
    converted = tmp_path / f"{fmt}.csv"
    inputs = [str(p) for p in SOURCES[fmt](tmp_path)]
    # --skip-invalid: some fixtures hold a deliberately broken record (listed in OUTPUT.rejects.jsonl).
    assert data_main(["convert", "--format", fmt, *inputs, "--output", str(converted), "--skip-invalid"]) == 0
    items = load_items(converted)
    assert items and all(item.metadata.get("source") for item in items)
    long = ["--data.max_length", "4096"]  # real 수능 items run past 1,024 tokens
    validated = cli(tmp_path, tiny_model_dir, "validate", "--data.train_path", "null",
                    "--data.val_path", str(converted), *long, capsys=capsys)  # fmt: skip
    assert 0.0 <= logged(validated, "val/acc") <= 1.0
    cli(tmp_path, tiny_model_dir, "predict", "--data.predict_path", str(converted), *long, capsys=capsys)
    assert predicted_ids(tmp_path) == [item.id for item in items]
    with open(tmp_path / "predictions" / "probabilities.csv", encoding="utf-8") as handle:
        assert [row["answer"] for row in csv.DictReader(handle)] == [str(item.answer) for item in items]
