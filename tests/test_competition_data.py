"""The real competition files load, validate and tokenize with no row lost."""

from __future__ import annotations

import subprocess
import sys

import pytest

from suneung_lit.data.cleaning import clean, load_corrections
from suneung_lit.data.prompts import load_template
from suneung_lit.data.records import Item, load_items, write_items
from suneung_lit.data.tokenization import encode_items, encoding_stats

from .conftest import COMPETITION_DATA, REPO, competition_marks

pytestmark = competition_marks("train.csv", "test.csv")


@pytest.mark.parametrize(("name", "rows", "with_plus"), [("train", 2031, 0), ("test", 869, 44)])
def test_every_competition_row_loads_cleans_and_tokenizes(tokenizer, tmp_path, name, rows, with_plus):
    items = load_items(COMPETITION_DATA / f"{name}.csv")
    assert len(items) == rows and sum(1 for i in items if i.question_plus) == with_plus
    cleaned, report = clean(items, allow_drops=(name == "train"))
    assert len(cleaned) + len(report.dropped_ids) == rows
    dataset = encode_items(cleaned, tokenizer, load_template("base"), 1024, 5, tmp_path)
    assert dataset["id"] == [i.id for i in cleaned]
    assert max(dataset["length"]) <= 1024
    stats = encoding_stats(dataset)
    over_limit = [i for i, full in zip(dataset["id"], stats.prompt_lengths, strict=True) if full > 1024]
    assert over_limit and list(stats.shortened_ids) == over_limit  # shortened exactly when too long, none lost


REVIEWED_CORRECTIONS = REPO / "data" / "corrections" / "generationfornlp_train.csv"


def test_the_reviewed_corrections_apply_to_the_real_train_set_after_the_configured_cleaning():
    import yaml

    config = yaml.safe_load((REPO / "configs" / "qwen32b.yaml").read_text(encoding="utf-8"))["data"]
    assert config["corrections_path"] == str(REVIEWED_CORRECTIONS.relative_to(REPO))
    items = load_items(COMPETITION_DATA / "train.csv")
    cleaned, report = clean(items, config["cleaning"], REVIEWED_CORRECTIONS)
    by_id = {i.id: i for i in cleaned}
    fixes = load_corrections(REVIEWED_CORRECTIONS)
    assert all(fix.reason and fix.source for fix in fixes)  # every fix says why and on whose word
    for fix in fixes:
        if fix.action == "drop":
            assert fix.id not in by_id
        else:
            assert by_id[fix.id].answer == int(fix.value)
    dropped_by_corrections = [r for r in report.steps if r.name == "corrections" and r.dropped][0]
    assert sorted(dropped_by_corrections.ids) == sorted(f.id for f in fixes if f.action == "drop")


def test_check_reports_each_correction_it_would_apply():
    result = subprocess.run(
        [sys.executable, "-m", "suneung_lit.data", "check", str(COMPETITION_DATA / "train.csv"),
         "--corrections", str(REVIEWED_CORRECTIONS)],
        capture_output=True, text=True, cwd=REPO, timeout=300,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert "corrections (" in result.stdout and " 13 apply" in result.stdout
    assert "generation-for-nlp-434 answer 1 -> 4: (가) is 순종" in result.stdout
    assert "generation-for-nlp-466 dropped: A timeline figure" in result.stdout


def test_check_command_summarises_the_train_file(tiny_model_dir):
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "suneung_lit.data",
            "check",
            str(COMPETITION_DATA / "train.csv"),
            "--tokenizer",
            str(tiny_model_dir),
        ],
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr
    assert "rows: 2031" in result.stdout and "over 1024 tokens: 344" in result.stdout
    assert "shortened" not in result.stdout  # no limit was set, so nothing is shortened


def test_check_fails_on_length_only_against_a_limit_the_user_sets(tiny_model_dir, tmp_path):
    # Like the longest real 수능 items: the question and choices alone exceed a small limit.
    long_question = "다음 글의 내용과 일치하지 않는 것은? " + "지문의 설명을 따라가며 읽는다. " * 120
    write_items([Item("long-1", "짧은 지문", long_question, ("가", "나", "다", "라"), 1)], tmp_path / "long.csv")
    command = [sys.executable, "-m", "suneung_lit.data", "check", str(tmp_path / "long.csv")]
    command += ["--tokenizer", str(tiny_model_dir)]
    unlimited = subprocess.run(command, capture_output=True, text=True, cwd=REPO, timeout=300)
    assert unlimited.returncode == 0, unlimited.stderr
    limited = subprocess.run([*command, "--max-length", "512"], capture_output=True, text=True, cwd=REPO, timeout=300)
    assert limited.returncode == 2 and "long-1" in limited.stderr and "even with an empty paragraph" in limited.stderr
