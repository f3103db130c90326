"""The command line end to end, in subprocesses, with the tiny 4-bit model on a task that needs the paragraph."""

from __future__ import annotations

import csv
import os
import re
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from suneung_lit.data.records import write_items
from suneung_lit.data.synthetic import make_items

from .conftest import REPO

pytestmark = pytest.mark.slow


def run_cli(*args: str, cwd: Path, timeout: int = 600) -> str:
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "TOKENIZERS_PARALLELISM": "false"}
    result = subprocess.run(
        [sys.executable, "-m", "suneung_lit", *args], cwd=cwd, capture_output=True, text=True, timeout=timeout, env=env
    )
    assert result.returncode == 0, f"{args[0]} failed:\n{result.stdout[-3000:]}\n{result.stderr[-5000:]}"
    return result.stdout + result.stderr


def common_args(model_dir: Path, work: Path, config: str = "demo.yaml") -> list[str]:
    """The CLI prefix that points a bundled config at a model folder and keeps every file inside ``work``."""
    return [
        "--config",
        str(REPO / "configs" / config),
        "--model.model_name_or_path",
        str(model_dir),
        "--data.train_path",
        str(work / "train.csv"),
        "--data.predict_path",
        str(work / "heldout.csv"),
        "--checkpoint.dirpath",
        str(work / "checkpoints"),
        "--prediction_writer.output_dir",
        str(work / "predictions"),
        "--adapter_export.output_dir",
        str(work / "adapter"),
        "--trainer.default_root_dir",
        str(work),
    ]


@pytest.fixture()
def work(tmp_path) -> Path:
    write_items(make_items(200, seed=11, prefix="train"), tmp_path / "train.csv", "competition")
    # Held-out items with answers, so predict can be scored; the answer column is not used to predict.
    write_items(make_items(40, seed=12, prefix="heldout"), tmp_path / "heldout.csv", "flat")
    return tmp_path


def test_fit_validate_predict_learns_the_task_and_writes_every_id(tiny_model_dir, work):
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    args = common_args(tiny_model_dir, work)
    run_cli("fit", *args, "--trainer.max_steps", "250", cwd=work)
    last = work / "checkpoints" / "last.ckpt"
    assert last.is_file() and (work / "adapter" / "adapter_model.safetensors").is_file()
    model_bytes = (tiny_model_dir / "model.safetensors").stat().st_size
    assert last.stat().st_size < 0.05 * model_bytes
    # The exported adapter loads with peft alone, outside the package.
    adapted = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(tiny_model_dir), work / "adapter")
    assert any("lora_A" in name for name, _ in adapted.named_parameters())

    validated = run_cli("validate", *args, "--ckpt_path", str(last), cwd=work)
    accuracy = float(re.search(r"val/acc\s*│\s*([0-9.]+)", validated).group(1))
    assert accuracy >= 0.9, validated[-2000:]

    run_cli("predict", *args, "--ckpt_path", str(last), cwd=work)
    with open(work / "predictions" / "predictions.csv", encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle))
    assert list(rows[0]) == ["id", "answer"]
    assert [r["id"] for r in rows] == [f"heldout-{n:04d}" for n in range(40)]
    gold = {item.id: item.answer for item in make_items(40, seed=12, prefix="heldout")}
    assert sum(int(r["answer"]) == gold[r["id"]] for r in rows) / len(rows) >= 0.9
    with open(work / "predictions" / "probabilities.csv", encoding="utf-8") as handle:
        probabilities = list(csv.DictReader(handle))
    assert [p["id"] for p in probabilities] == [r["id"] for r in rows]
    assert {"p1", "p5", "prediction", "answer"} <= set(probabilities[0])


def test_stop_and_resume_reaches_the_same_lora_weights_as_one_run(tiny_model_dir, tmp_path):
    write_items(make_items(40, seed=13, prefix="train"), tmp_path / "train.csv")
    write_items([replace(i, answer=None) for i in make_items(4, seed=14)], tmp_path / "heldout.csv")
    settings = [
        "--trainer.max_steps",
        "12",
        "--model.optimization.scheduler_total_steps",
        "12",
        "--data.train_batch_size",
        "4",
        "--checkpoint.monitor",
        "null",
        "--checkpoint.every_n_train_steps",
        "3",
        "--trainer.limit_val_batches",
        "0",
    ]
    once, twice = tmp_path / "once", tmp_path / "twice"
    for folder in (once, twice):
        folder.mkdir()
        for name in ("train.csv", "heldout.csv"):
            (folder / name).write_bytes((tmp_path / name).read_bytes())
    run_cli("fit", *common_args(tiny_model_dir, once), *settings, cwd=once)
    # Stop mid-epoch (8 batches per epoch) after 6 steps, then resume from last.ckpt up to the same 12.
    run_cli("fit", *common_args(tiny_model_dir, twice), *settings, "--trainer.max_steps", "6", cwd=twice)
    assert torch.load(twice / "checkpoints" / "last.ckpt", weights_only=False)["global_step"] == 6
    run_cli("fit", *common_args(tiny_model_dir, twice), *settings, "--ckpt_path", "last", cwd=twice)
    first = load_file(once / "adapter" / "adapter_model.safetensors")
    resumed = load_file(twice / "adapter" / "adapter_model.safetensors")
    assert first.keys() == resumed.keys()
    for key in first:
        torch.testing.assert_close(resumed[key], first[key], rtol=0, atol=1e-6)
    # LoRA B starts at zero: non-zero B weights show that training really moved them.
    assert any(first[k].abs().max() > 0 for k in first if "lora_B" in k)


def test_ddp_on_two_cpu_processes_completes_a_short_fit(tiny_model_dir, work):
    output = run_cli(
        "fit",
        *common_args(tiny_model_dir, work),
        "--trainer.strategy",
        "ddp",
        "--trainer.devices",
        "2",
        "--trainer.max_steps",
        "4",
        "--trainer.limit_val_batches",
        "1",
        cwd=work,
    )
    assert "max_steps=4` reached" in output
    assert torch.load(work / "checkpoints" / "last.ckpt", weights_only=False)["global_step"] == 4
