"""Debiased scoring through the real Trainer and CLI, on the tiny 4-bit model."""

from __future__ import annotations

import csv
import os
import random
import subprocess
import sys
from pathlib import Path

import lightning as L
import pytest
import torch

from suneung_lit.data.datamodule import MultipleChoiceDataModule
from suneung_lit.data.records import write_items
from suneung_lit.data.synthetic import make_items

from .conftest import quick_learner, run_in_process
from .test_cli_end_to_end import common_args

pytestmark = pytest.mark.slow


def quiet_trainer(**settings) -> L.Trainer:
    return L.Trainer(accelerator="cpu", logger=False, enable_progress_bar=False, enable_model_summary=False, **settings)


def test_debiased_scoring_beats_plain_scoring_after_training_on_skewed_answers(tiny_model_dir, tmp_path):
    # 80% of the training answers are "1": a short fine-tune learns that prior before it learns to read.
    pool = make_items(1200, seed=5, prefix="train")
    skewed = [i for i in pool if i.answer == 1][:160] + [i for i in pool if i.answer != 1][:40]
    random.Random(0).shuffle(skewed)
    write_items(skewed, tmp_path / "train.csv")
    write_items(make_items(60, seed=6, prefix="val"), tmp_path / "val.csv")  # every position equally often
    L.seed_everything(0)
    module = quick_learner(tiny_model_dir)
    paths = dict(max_length=256, eval_batch_size=32, cache_dir=str(tmp_path / "cache"))
    datamodule = MultipleChoiceDataModule(
        str(tiny_model_dir),
        train_path=str(tmp_path / "train.csv"),
        val_path=str(tmp_path / "val.csv"),
        train_batch_size=8,
        **paths,
    )
    quiet_trainer(max_steps=60, enable_checkpointing=False, limit_val_batches=0, num_sanity_val_steps=0).fit(
        module, datamodule=datamodule
    )
    accuracy = {}
    for mode in ("none", "cyclic"):
        module.hparams.debias = mode
        balanced = MultipleChoiceDataModule(
            str(tiny_model_dir), val_path=str(tmp_path / "val.csv"), debias=mode, **paths
        )
        accuracy[mode] = quiet_trainer().validate(module, datamodule=balanced, verbose=False)[0]["val/acc"]
    assert accuracy["cyclic"] >= accuracy["none"] + 0.08, accuracy


@pytest.fixture()
def work(tmp_path) -> Path:
    write_items(make_items(60, seed=11, prefix="train"), tmp_path / "train.csv")
    write_items(make_items(15, seed=12, prefix="heldout"), tmp_path / "heldout.csv", "flat")
    return tmp_path


@pytest.mark.parametrize("mode", ["cyclic", "pride"])
def test_cli_predict_with_debiasing_writes_every_id_once_in_input_order(tiny_model_dir, work, mode, capsys):
    output = run_in_process(["predict", *common_args(tiny_model_dir, work), "--model.debias", mode], capsys)
    passes = {"cyclic": "4.67", "pride": "1."}[mode]  # 15 items: 5 four-choice and 10 five-choice
    assert f"predict debias={mode}: {passes}" in output
    with open(work / "predictions" / "probabilities.csv", encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle))
    assert [row["id"] for row in rows] == [f"heldout-{n:04d}" for n in range(15)]
    for row in rows:
        total = sum(float(row[f"p{n}"]) for n in range(1, 6) if row[f"p{n}"])
        assert abs(total - 1.0) < 1e-4


def read_probabilities(path: Path) -> dict[str, torch.Tensor]:
    """id -> the row's option probabilities (as many as the item has choices), from probabilities.csv."""
    with open(path, encoding="utf-8") as handle:
        return {
            row["id"]: torch.tensor([float(row[f"p{k}"]) for k in range(1, 6) if row.get(f"p{k}")], dtype=torch.float64)
            for row in csv.DictReader(handle)
        }


def test_offsets_are_fitted_on_validation_saved_with_the_run_and_applied_by_predict(tiny_model_dir, work, capsys):
    args = [*common_args(tiny_model_dir, work), "--model.debias", "offsets"]
    output = run_in_process(["fit", *args, "--trainer.max_steps", "4", "--trainer.val_check_interval", "4"], capsys)
    assert "fitted position offsets on 12 validation items" in output
    checkpoint = torch.load(work / "checkpoints" / "last.ckpt", weights_only=False)
    assert set(checkpoint["position_offsets"]) == {4, 5}
    ckpt = str(work / "checkpoints" / "last.ckpt")
    run_in_process(["predict", *args, "--ckpt_path", ckpt], capsys)
    plain_args = [*args, "--model.debias", "none", "--prediction_writer.output_dir", str(work / "plain")]
    run_in_process(["predict", *plain_args, "--ckpt_path", ckpt], capsys)
    corrected, plain = (read_probabilities(work / folder / "probabilities.csv") for folder in ("predictions", "plain"))
    assert list(corrected) == list(plain) == [f"heldout-{n:04d}" for n in range(15)]
    # Applied: between any two positions, the log-odds are the plain ones minus the difference of the offsets.
    # Only positions above 1e-3 in both files are compared: the files keep 6 decimals.
    compared = 0
    for item_id, p_plain in plain.items():
        offsets = torch.tensor(checkpoint["position_offsets"][len(p_plain)], dtype=torch.float64)
        kept = ((p_plain > 1e-3) & (corrected[item_id] > 1e-3)).nonzero().flatten()
        for i in kept[1:]:
            j = kept[0]
            expected = torch.log(p_plain[i] / p_plain[j]) - (offsets[i] - offsets[j])
            observed = torch.log(corrected[item_id][i] / corrected[item_id][j])
            assert float(observed) == pytest.approx(float(expected), abs=1e-2), item_id
            compared += 1
    assert compared >= 15 and any(
        float(o.abs().max()) > 0.1 for o in map(torch.tensor, checkpoint["position_offsets"].values())
    )
    env = {**os.environ, "TOKENIZERS_PARALLELISM": "false"}
    refused = subprocess.run(
        [sys.executable, "-m", "suneung_lit", "predict", *args], cwd=work, capture_output=True, text=True, env=env
    )
    assert refused.returncode != 0 and "needs a checkpoint (--ckpt_path) from a fit run" in refused.stderr
