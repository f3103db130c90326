"""Shapes of input real users bring, through the command line on the tiny model."""

from __future__ import annotations

import csv
import re
from dataclasses import replace
from pathlib import Path

import pytest

from suneung_lit.data.records import write_items
from suneung_lit.data.synthetic import make_items

from .conftest import run_in_process

pytestmark = pytest.mark.slow


def logged(output: str, key: str) -> float:
    """The value of ``key`` in Lightning's printed metrics table."""
    match = re.search(rf"{re.escape(key)}\s*│\s*([0-9.]+)", output)
    assert match, f"{key} not printed:\n{output[-2000:]}"
    return float(match.group(1))


# --- the matrix: one small file per shape, through the CLI in this process ----------------------------------------


def cli(tmp_path: Path, model: Path, command: str, *args: str, capsys) -> str:
    """Run ``python -m suneung_lit COMMAND --config demo.yaml ...`` in this process with every output in tmp_path."""
    outputs = [
        "--checkpoint.dirpath", str(tmp_path / "checkpoints"),
        "--prediction_writer.output_dir", str(tmp_path / "predictions"),
        "--adapter_export.output_dir", str(tmp_path / "adapter"),
        "--trainer.default_root_dir", str(tmp_path),
        "--trainer.enable_progress_bar", "false",
    ]  # fmt: skip
    return run_in_process(
        [command, "--config", "demo.yaml", "--model.model_name_or_path", str(model), *outputs, *args], capsys
    )


def predicted_ids(tmp_path: Path) -> list[str]:
    with open(tmp_path / "predictions" / "predictions.csv", encoding="utf-8") as handle:
        return [row["id"] for row in csv.DictReader(handle)]


SHAPES = {
    "one item": lambda: make_items(1, seed=3, prefix="one"),
    "sources with empty values": lambda: [
        replace(item, metadata={"source": "" if n % 2 else "klue"})
        for n, item in enumerate(make_items(6, seed=4, prefix="empty"))
    ],
    "only 4-choice items": lambda: [item for item in make_items(12, seed=5, prefix="four") if item.num_choices == 4],
    "only 5-choice items": lambda: [item for item in make_items(6, seed=6, prefix="five") if item.num_choices == 5],
    "every answer the same": lambda: [replace(item, answer=1) for item in make_items(6, seed=7, prefix="same")],
    "items carrying a score": lambda: [
        replace(item, metadata={"score": "3" if n % 2 else "2", "source": "kice-2024"})
        for n, item in enumerate(make_items(6, seed=8, prefix="score"))
    ],
}


@pytest.mark.parametrize("shape", list(SHAPES))
def test_each_labelled_shape_validates_and_predicts_every_id(shape, tiny_model_dir, tmp_path, capsys):
    items = SHAPES[shape]()
    write_items(items, tmp_path / "items.csv", "flat")
    path = str(tmp_path / "items.csv")
    validated = cli(tmp_path, tiny_model_dir, "validate", "--data.train_path", "null", "--data.val_path", path,
                    capsys=capsys)  # fmt: skip
    assert 0.0 <= logged(validated, "val/acc") <= 1.0
    cli(tmp_path, tiny_model_dir, "predict", "--data.predict_path", path, capsys=capsys)
    assert predicted_ids(tmp_path) == [item.id for item in items]


def test_every_answer_the_same_still_fits(tiny_model_dir, tmp_path, capsys):
    items = [replace(item, answer=1) for item in make_items(20, seed=9, prefix="same") if item.num_choices == 5]
    write_items(items, tmp_path / "train.csv", "competition")
    output = cli(tmp_path, tiny_model_dir, "fit", "--data.train_path", str(tmp_path / "train.csv"),
                 "--trainer.max_steps", "2", "--trainer.val_check_interval", "2", capsys=capsys)  # fmt: skip
    assert (tmp_path / "checkpoints" / "last.ckpt").is_file(), output[-2000:]


@pytest.mark.parametrize("max_length", [1024, 4096])
def test_a_3800_token_item_is_shortened_to_fit_or_kept_whole(max_length, tiny_model_dir, tmp_path, capsys):
    from transformers import AutoTokenizer

    from suneung_lit.data.prompts import prompt_token_counts

    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    base = make_items(2, seed=10, prefix="long")
    filler = " ".join(f"{n}번째 문장에서 글쓴이는 계절과 바다에 관한 생각을 이어 간다." for n in range(145))
    long = replace(base[0], paragraph=filler + " " + base[0].paragraph)
    length = prompt_token_counts([long], tokenizer, "base")[0]
    assert 3600 <= length <= 4000, length
    write_items([long, base[1]], tmp_path / "items.csv", "flat")
    output = cli(tmp_path, tiny_model_dir, "predict", "--data.predict_path", str(tmp_path / "items.csv"),
                 "--data.max_length", str(max_length), capsys=capsys)  # fmt: skip
    assert predicted_ids(tmp_path) == ["long-0000", "long-0001"]
    shortened = 1 if max_length == 1024 else 0
    assert f"predict: 2 items, {shortened} with the paragraph shortened to fit {max_length} tokens" in output


def test_crlf_line_ends_and_a_byte_order_mark_read_like_plain_utf8(tiny_model_dir, tmp_path, capsys):
    items = make_items(5, seed=11, prefix="crlf")
    write_items(items, tmp_path / "plain.csv", "competition")
    text = (tmp_path / "plain.csv").read_text(encoding="utf-8")
    (tmp_path / "windows.csv").write_bytes(b"\xef\xbb\xbf" + text.replace("\n", "\r\n").encode("utf-8"))
    cli(tmp_path, tiny_model_dir, "predict", "--data.predict_path", str(tmp_path / "windows.csv"), capsys=capsys)
    assert predicted_ids(tmp_path) == [item.id for item in items]
    validated = cli(tmp_path, tiny_model_dir, "validate", "--data.train_path", "null",
                    "--data.val_path", str(tmp_path / "windows.csv"), capsys=capsys)  # fmt: skip
    assert 0.0 <= logged(validated, "val/acc") <= 1.0


def test_answers_in_another_column_read_with_answer_column_and_are_named_without_it(tiny_model_dir, tmp_path, capsys):
    from suneung_lit.data.records import DataValidationError

    items = make_items(5, seed=12, prefix="moved")
    write_items([replace(i, answer=None, metadata={"answer_true": str(i.answer)}) for i in items],
                tmp_path / "moved.csv", "competition")  # fmt: skip
    path = str(tmp_path / "moved.csv")
    validated = cli(tmp_path, tiny_model_dir, "validate", "--data.train_path", "null", "--data.val_path", path,
                    "--data.answer_column", "answer_true", capsys=capsys)  # fmt: skip
    assert 0.0 <= logged(validated, "val/acc") <= 1.0
    with pytest.raises(DataValidationError, match="answer_true"):
        cli(tmp_path, tiny_model_dir, "validate", "--data.train_path", "null", "--data.val_path", path, capsys=capsys)


def test_a_predict_file_without_answers_writes_every_id(tiny_model_dir, tmp_path, capsys):
    items = [replace(item, answer=None) for item in make_items(7, seed=13, prefix="blind")]
    write_items(items, tmp_path / "blind.csv", "competition")
    cli(tmp_path, tiny_model_dir, "predict", "--data.predict_path", str(tmp_path / "blind.csv"), capsys=capsys)
    assert predicted_ids(tmp_path) == [item.id for item in items]
    with open(tmp_path / "predictions" / "probabilities.csv", encoding="utf-8") as handle:
        assert "answer" not in next(csv.reader(handle))


def test_duplicate_ids_stop_the_run_naming_file_row_and_id(tiny_model_dir, tmp_path, capsys):
    from suneung_lit.data.records import DataValidationError

    first, second = make_items(2, seed=14, prefix="dup")
    write_items([first, replace(second, id=first.id)], tmp_path / "dup.csv", "flat")
    with pytest.raises(DataValidationError) as raised:
        cli(tmp_path, tiny_model_dir, "predict", "--data.predict_path", str(tmp_path / "dup.csv"), capsys=capsys)
    problem = raised.value.problems[0]
    # Rows count data rows from 1, the header not counted (in JSON Lines: the line).
    assert (Path(problem.path).name, problem.row, problem.item_id, problem.column) == ("dup.csv", 2, first.id, "id")
    assert "first seen at row 1" in problem.message
    assert not (tmp_path / "predictions" / "predictions.csv").exists()


def test_ids_shared_by_train_and_validation_are_used_for_validation_only(tiny_model_dir, tmp_path, capsys):
    train = make_items(12, seed=15, prefix="shared")
    write_items(train, tmp_path / "train.csv", "competition")
    write_items(train[:4], tmp_path / "val.csv", "flat")
    with pytest.warns(Warning, match="4 of 12 train ids are also validation ids"):
        cli(tmp_path, tiny_model_dir, "fit", "--data.train_path", str(tmp_path / "train.csv"),
            "--data.val_path", str(tmp_path / "val.csv"), "--trainer.max_steps", "1", capsys=capsys)  # fmt: skip
    assert (tmp_path / "checkpoints" / "last.ckpt").is_file()


def test_a_file_with_one_source_validates_tests_and_fits(tiny_model_dir, tmp_path, capsys):
    # One exam paper converted alone: every row has the same `source`. torchmetrics squeezes a one-source result
    # to a 0-d tensor, which once crashed the per-source logging at the end of every validation.
    write_items(make_items(16, seed=1, prefix="train"), tmp_path / "train.csv", "competition")
    paper = [replace(item, metadata={"source": "kice-2024"}) for item in make_items(6, seed=2, prefix="paper")]
    write_items(paper, tmp_path / "paper.csv", "flat")
    files = ["--data.train_path", str(tmp_path / "train.csv"), "--data.val_path", str(tmp_path / "paper.csv"),
             "--data.test_path", str(tmp_path / "paper.csv")]  # fmt: skip
    cli(tmp_path, tiny_model_dir, "fit", *files, "--trainer.max_steps", "2", "--trainer.val_check_interval", "2",
        capsys=capsys)  # fmt: skip
    ckpt = str(tmp_path / "checkpoints" / "last.ckpt")
    validated = cli(tmp_path, tiny_model_dir, "validate", *files, "--ckpt_path", ckpt, capsys=capsys)
    assert logged(validated, "val/acc/kice-2024") == logged(validated, "val/acc")
    tested = cli(tmp_path, tiny_model_dir, "test", *files, "--ckpt_path", ckpt, capsys=capsys)
    assert logged(tested, "test/acc/kice-2024") == logged(tested, "test/acc")
