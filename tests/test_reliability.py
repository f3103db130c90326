"""Reliability: fail fast on bad configuration, survive a hard kill, never write a partial or incomplete output."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path

import pytest
import torch

from suneung_lit.atomic_write import write_atomically
from suneung_lit.data.records import write_items
from suneung_lit.data.synthetic import make_items
from suneung_lit.writer import PredictionSetMismatchError, labelled_accuracy_line, merge_predictions

from .conftest import REPO

DEMO = str(REPO / "configs" / "demo.yaml")
FIT_ON_SAMPLE = ("fit", "--config", DEMO, "--data.train_path", str(REPO / "data" / "sample_train.csv"))


def cli(*args: str, cwd: Path, timeout: int = 300) -> subprocess.CompletedProcess:
    env = {**os.environ, "TOKENIZERS_PARALLELISM": "false"}
    return subprocess.run(
        [sys.executable, "-m", "suneung_lit", *args], cwd=cwd, capture_output=True, text=True, timeout=timeout, env=env
    )


def test_mistyped_config_key_fails_at_parse_time(tmp_path):
    result = cli("fit", "--config", DEMO, "--model.lora_rank", "16", cwd=tmp_path)
    assert result.returncode != 0 and "lora_rank" in result.stderr


def test_missing_data_file_fails_before_the_model_loads(tmp_path):
    start = time.perf_counter()
    result = cli(
        "fit",
        "--config",
        DEMO,
        "--model.model_name_or_path",
        str(tmp_path / "no-model"),
        "--data.train_path",
        str(tmp_path / "missing.csv"),
        cwd=tmp_path,
    )
    assert result.returncode != 0
    assert "missing.csv" in result.stderr and "file not found" in result.stderr
    assert time.perf_counter() - start < 120  # it never got as far as the (absent) model


def test_bad_rows_fail_before_the_model_loads(tmp_path, tiny_model_dir):
    # A "model" folder with the tokenizer but no weights: any attempt to load the model would fail differently.
    tokenizer_only = tmp_path / "tokenizer-only"
    tokenizer_only.mkdir()
    for name in ("tokenizer.json", "tokenizer_config.json", "chat_template.jinja"):
        (tokenizer_only / name).write_bytes((tiny_model_dir / name).read_bytes())
    bad = tmp_path / "bad.csv"
    bad.write_text(
        "id,paragraph,problems,question_plus\nq1,지문,\"{'question': '질문?', 'choices': ['가'], 'answer': 1}\",\n",
        encoding="utf-8",
    )
    result = cli(
        "fit",
        "--config",
        DEMO,
        "--model.model_name_or_path",
        str(tokenizer_only),
        "--data.train_path",
        str(bad),
        cwd=tmp_path,
    )
    assert result.returncode != 0
    assert "bad.csv, row 1, id 'q1', column 'problems.choices': has 1 choices" in result.stderr


def test_unwritable_output_folder_fails_before_the_model_loads(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    result = cli(
        *FIT_ON_SAMPLE,
        "--checkpoint.dirpath",
        str(blocker / "checkpoints"),
        cwd=tmp_path,
    )
    assert result.returncode != 0 and "checkpoint.dirpath: cannot write" in result.stderr


def test_unknown_template_fails_before_the_model_loads(tmp_path):
    result = cli(
        *FIT_ON_SAMPLE,
        "--data.template",
        "fancy",
        cwd=tmp_path,
    )
    assert result.returncode != 0 and "unknown prompt template 'fancy'" in result.stderr


def test_predictions_must_cover_exactly_the_input_ids():
    batch = {
        "index": torch.tensor([0, 1]),
        "id": ["a", "b"],
        "probabilities": torch.tensor([[0.9, 0.1]] * 2),
        "prediction": torch.tensor([1, 1]),
        "answer": torch.tensor([0, 0]),
        "num_choices": torch.tensor([2, 2]),
    }
    assert [row["id"] for row in merge_predictions([batch], ["a", "b"])] == ["a", "b"]
    with pytest.raises(PredictionSetMismatchError, match="missing \\['c'\\]"):
        merge_predictions([batch], ["a", "b", "c"])


def test_labelled_predictions_report_accuracy_beside_the_best_constant():
    rows = [
        {"prediction": 2, "answer": 2, "num_choices": 4},
        {"prediction": 2, "answer": 1, "num_choices": 4},
        {"prediction": 3, "answer": 1, "num_choices": 5},
        {"prediction": 4, "answer": 4, "num_choices": 4},
    ]
    line = labelled_accuracy_line(rows)
    assert line.startswith("predict accuracy on 4 labelled items: 0.500 [")
    assert line.endswith("best constant predictor (always 1): 0.500")


def test_interrupted_write_leaves_the_previous_file_whole(tmp_path):
    target = tmp_path / "predictions.csv"
    write_atomically(target, "id,answer\na,1\n")

    with pytest.raises(TypeError):
        write_atomically(target, None)  # fails after the temporary file is opened
    assert target.read_text() == "id,answer\na,1\n"
    assert [p.name for p in tmp_path.iterdir()] == ["predictions.csv"]


@pytest.mark.slow
def test_hard_kill_then_resume_finishes_with_the_planned_steps(tmp_path, tiny_model_dir):
    write_items(make_items(64, seed=21), tmp_path / "train.csv")
    write_items([replace(i, answer=None) for i in make_items(4, seed=22)], tmp_path / "test.csv")
    args = [
        "fit",
        "--config",
        DEMO,
        "--model.model_name_or_path",
        str(tiny_model_dir),
        "--data.train_path",
        str(tmp_path / "train.csv"),
        "--data.predict_path",
        str(tmp_path / "test.csv"),
        "--checkpoint.dirpath",
        str(tmp_path / "checkpoints"),
        "--checkpoint.monitor",
        "null",
        "--checkpoint.every_n_train_steps",
        "5",
        "--adapter_export.output_dir",
        str(tmp_path / "adapter"),
        "--trainer.default_root_dir",
        str(tmp_path),
        "--trainer.max_steps",
        "40",
        "--trainer.limit_val_batches",
        "0",
        "--model.optimization.scheduler_total_steps",
        "40",
    ]
    # The run kills itself with SIGKILL as step 15 begins, right after last.ckpt was saved at step 15.
    env = {**os.environ, "TOKENIZERS_PARALLELISM": "false", "PYTHONPATH": str(REPO)}
    kill = ["--trainer.callbacks+=tests.kill_switch.KillAtStep", "--trainer.callbacks.step", "15"]
    killed = subprocess.run(
        [sys.executable, "-m", "suneung_lit", *args, *kill], cwd=tmp_path, env=env, capture_output=True, text=True
    )
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-3000:]
    last = tmp_path / "checkpoints" / "last.ckpt"
    assert torch.load(last, weights_only=True)["global_step"] == 15
    assert not (tmp_path / "adapter" / "adapter_model.safetensors").exists()

    result = cli(*args, "--ckpt_path", "last", cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    assert torch.load(last, weights_only=True)["global_step"] == 40
    assert (tmp_path / "adapter" / "adapter_model.safetensors").is_file()


@pytest.mark.parametrize(("split", "stage"), [("val", "validate"), ("test", "test")])
def test_unlabelled_items_in_a_scored_file_fail_naming_file_row_and_column(tiny_model_dir, tmp_path, split, stage):
    # Validation and test read accuracy and loss against the answers; an item without one is an input error found
    # before the model loads (setup runs first), not a cross-entropy crash mid-epoch.
    from suneung_lit.data.datamodule import MultipleChoiceDataModule
    from suneung_lit.data.records import DataValidationError

    items = make_items(3, seed=5, prefix="scored")
    items[1] = replace(items[1], answer=None)
    write_items(items, tmp_path / "scored.csv", "flat")
    datamodule = MultipleChoiceDataModule(str(tiny_model_dir), **{f"{split}_path": str(tmp_path / "scored.csv")})
    with pytest.raises(DataValidationError) as raised:
        datamodule.setup(stage)
    (problem,) = raised.value.problems
    assert (problem.path, problem.item_id, problem.column) == (str(tmp_path / "scored.csv"), "scored-0001", "answer")
    assert "need answers (use predict)" in str(raised.value)
