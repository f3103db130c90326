"""Shapes of input real users bring, through the command line on the tiny model."""

from __future__ import annotations

import re
from dataclasses import replace
from pathlib import Path

import pytest

from suneung_lit.data.records import write_items
from suneung_lit.data.synthetic import make_items

from .test_cli_end_to_end import common_args, run_cli

pytestmark = pytest.mark.slow


def logged(output: str, key: str) -> float:
    """The value of ``key`` in Lightning's printed metrics table."""
    match = re.search(rf"{re.escape(key)}\s*│\s*([0-9.]+)", output)
    assert match, f"{key} not printed:\n{output[-2000:]}"
    return float(match.group(1))


def test_a_file_with_one_source_validates_tests_and_fits(tiny_model_dir, tmp_path: Path):
    # One exam paper converted alone: every row has the same `source`. torchmetrics squeezes a one-source result
    # to a 0-d tensor, which once crashed the per-source logging at the end of every validation.
    write_items(make_items(16, seed=1, prefix="train"), tmp_path / "train.csv", "competition")
    paper = [replace(item, metadata={"source": "kice-2024"}) for item in make_items(6, seed=2, prefix="paper")]
    write_items(paper, tmp_path / "paper.csv", "flat")
    args = [*common_args(tiny_model_dir, tmp_path), "--data.val_path", str(tmp_path / "paper.csv")]
    args += ["--data.test_path", str(tmp_path / "paper.csv")]

    fitted = run_cli("fit", *args, "--trainer.max_steps", "2", "--trainer.val_check_interval", "2", cwd=tmp_path)
    assert (tmp_path / "checkpoints" / "last.ckpt").is_file(), fitted[-2000:]
    ckpt = str(tmp_path / "checkpoints" / "last.ckpt")
    validated = run_cli("validate", *args, "--ckpt_path", ckpt, cwd=tmp_path)
    assert logged(validated, "val/acc/kice-2024") == logged(validated, "val/acc")
    tested = run_cli("test", *args, "--ckpt_path", ckpt, cwd=tmp_path)
    assert logged(tested, "test/acc/kice-2024") == logged(tested, "test/acc")
