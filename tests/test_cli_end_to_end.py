"""The command line end to end with the tiny 4-bit model on a task that needs the paragraph: in this process
(``run_in_process``, no interpreter start-up per command), and in subprocesses where a run needs processes of its
own (two DDP ranks)."""

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

from .conftest import REPO, real_items, run_in_process
from .test_input_shapes import logged

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


def test_fit_validate_predict_learns_the_task_and_writes_every_id(tiny_model_dir, work, capsys):
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    args = common_args(tiny_model_dir, work)
    run_in_process(["fit", *args, "--trainer.max_steps", "250"], capsys)
    last = work / "checkpoints" / "last.ckpt"
    assert last.is_file() and (work / "adapter" / "adapter_model.safetensors").is_file()
    model_bytes = (tiny_model_dir / "model.safetensors").stat().st_size
    assert last.stat().st_size < 0.05 * model_bytes
    # The exported adapter loads with peft alone, outside the package.
    adapted = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(tiny_model_dir), work / "adapter")
    assert any("lora_A" in name for name, _ in adapted.named_parameters())

    validated = run_in_process(["validate", *args, "--ckpt_path", str(last)], capsys)
    accuracy = float(re.search(r"val/acc\s*│\s*([0-9.]+)", validated).group(1))
    assert accuracy >= 0.9, validated[-2000:]

    run_in_process(["predict", *args, "--ckpt_path", str(last)], capsys)
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


def test_stop_and_resume_reaches_the_same_lora_weights_as_one_run(tiny_model_dir, tmp_path, capsys):
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
    run_in_process(["fit", *common_args(tiny_model_dir, once), *settings], capsys)
    # Stop mid-epoch (8 batches per epoch) after 6 steps, then resume from last.ckpt up to the same 12.
    run_in_process(["fit", *common_args(tiny_model_dir, twice), *settings, "--trainer.max_steps", "6"], capsys)
    assert torch.load(twice / "checkpoints" / "last.ckpt", weights_only=False)["global_step"] == 6
    run_in_process(["fit", *common_args(tiny_model_dir, twice), *settings, "--ckpt_path", "last"], capsys)
    first = load_file(once / "adapter" / "adapter_model.safetensors")
    resumed = load_file(twice / "adapter" / "adapter_model.safetensors")
    assert first.keys() == resumed.keys()
    for key in first:
        torch.testing.assert_close(resumed[key], first[key], rtol=0, atol=1e-6)
    # LoRA B starts at zero: non-zero B weights show that training really moved them.
    assert any(first[k].abs().max() > 0 for k in first if "lora_B" in k)


def probabilities_by_id(folder: Path) -> dict[str, list[float]]:
    with open(folder / "probabilities.csv", encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle))
    return {row["id"]: [float(v or 0) for k, v in row.items() if re.fullmatch(r"p\d", k)] for row in rows}


def test_ddp_on_two_cpu_processes_validates_and_predicts_what_one_process_does(tiny_model_dir, work, capsys):
    # A short fit in this process (two ranks training is tests/test_sharding.py's), then validate and predict of the
    # 19 real KLUE items from its checkpoint on two gloo ranks through the CLI and in one process. With 4 items a
    # batch the ranks get 3 and 2 batches: uneven shards, each item scored once.
    real = real_items()
    write_items(real, work / "real.csv")
    args, ddp = common_args(tiny_model_dir, work), ["--trainer.strategy", "ddp", "--trainer.devices", "2"]
    run_in_process(["fit", *args, "--trainer.max_steps", "4", "--trainer.limit_val_batches", "1"], capsys)
    last = work / "checkpoints" / "last.ckpt"
    assert torch.load(last, weights_only=False)["global_step"] == 4
    scored = ["--ckpt_path", str(last), "--data.eval_batch_size", "4", "--data.val_path", str(work / "real.csv")]
    scored += ["--data.predict_path", str(work / "real.csv")]
    two = run_cli("validate", *args, *ddp, *scored, cwd=work)
    run_cli("predict", *args, *ddp, *scored, "--prediction_writer.output_dir", str(work / "two"), cwd=work)
    one = run_in_process(["validate", *args, *scored], capsys)
    run_in_process(["predict", *args, *scored, "--prediction_writer.output_dir", str(work / "one")], capsys)
    assert logged(two, "val/acc") == logged(one, "val/acc")
    on_two, on_one = probabilities_by_id(work / "two"), probabilities_by_id(work / "one")
    assert list(on_two) == list(on_one) == [item.id for item in real]
    for item_id, probabilities in on_one.items():
        assert on_two[item_id] == pytest.approx(probabilities, abs=2e-6), item_id
    assert logged(two, "val/loss") == pytest.approx(logged(one, "val/loss"), rel=1e-4)
