"""Data tools: converters for public sets, augmentation, merging, contamination and the split command."""

from __future__ import annotations

import subprocess
import sys
from collections import Counter
from dataclasses import replace
from pathlib import Path

import pytest

from suneung_lit.data.augmenting import balance_answers, shuffle_choices
from suneung_lit.data.converters import convert
from suneung_lit.data.matching import find_overlap, merge
from suneung_lit.data.records import DataValidationError, Item, load_items, write_items
from suneung_lit.data.splitting import grouped_split, paragraph_key
from suneung_lit.data.synthetic import make_items

from .conftest import FIXTURES, REPO


def data_cli(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "suneung_lit.data", *args], cwd=cwd, capture_output=True, text=True, timeout=120
    )


def test_kmmlu_rows_become_items_with_category_metadata():
    conversion = convert("kmmlu", [FIXTURES / "kmmlu.csv"])
    first, second = conversion.items
    assert first.id == "kmmlu-kmmlu-1" and first.paragraph == "" and first.answer == 2
    assert first.choices[1] == "문과와 무과가 있었다"
    assert first.metadata == {"source": "kmmlu", "category": "Korean-History", "human_accuracy": "0.55"}
    assert "human_accuracy" not in second.metadata  # "nan" is empty
    assert [(p.row, p.column) for p in conversion.problems] == [(3, "answer")]


def test_haerae_sections_and_letter_answers():
    conversion = convert("haerae", [FIXTURES / "haerae.csv"])
    passage, sentence, bare = conversion.items
    assert passage.paragraph.startswith("봄이 오면") and passage.question == "윗글에서 사람들이 산에 오르는 이유는?"
    assert passage.choices == ("꽃을 보려고", "운동하려고", "나무를 심으려고", "눈을 보려고") and passage.answer == 1
    assert sentence.paragraph == "" and "밥을 먹을 것이다" in sentence.question_plus
    assert "시제 표현" in sentence.question_plus and sentence.answer == 3
    assert bare.question == "다음 중 수도가 서울인 나라는?" and bare.answer == 2 and bare.num_choices == 5
    assert [(p.row, p.column) for p in conversion.problems] == [(4, "options")]


def test_click_text_answers_map_to_positions():
    conversion = convert("click", [FIXTURES / "click.json"])
    assert [(i.id, i.answer) for i in conversion.items] == [("click-click-KHB_1", 2), ("click-click-CSAT_2", 3)]
    assert [(p.item_id, p.column) for p in conversion.problems] == [("click-click-BAD_3", "answer")]


def test_click_release_with_repeated_ids_converts_to_unique_stable_ids():
    """The real release layout: sets with problems, ids repeated within Grammar_CSAT and across files."""
    files = sorted((FIXTURES / "click_release").rglob("*.json"))
    conversion = convert("click", files)
    assert not conversion.problems
    assert [i.id for i in conversion.items] == [
        "click-Functional_CSAT-csat_07_6",
        "click-Functional_CSAT-csat_09_10",
        "click-Grammar_CSAT-csat_14_11",
        "click-Grammar_CSAT-csat_14_13",
        "click-Grammar_CSAT-csat_14_11~2",
        "click-Grammar_CSAT-csat_14_13~2",
    ]
    first = conversion.items[0]
    assert first.answer == 3 and first.num_choices == 5 and first.metadata["original_id"] == "csat_07_6"
    again = convert("click", files)
    assert [i.id for i in again.items] == [i.id for i in conversion.items]


def test_kice_sets_become_one_row_per_problem():
    items = convert("kice", [FIXTURES / "kice.json"]).items
    assert [i.id for i in items] == [f"kice-2023_11_KICE_1-3-{n}" for n in (1, 2, 3)]
    first, second, third = items
    assert first.question == "윗글의 내용과 일치하는 것은?" and first.paragraph.startswith("독서는")
    assert second.question.endswith("않은 것은?") and second.metadata["score"] == "3"
    assert second.question_plus == "<보기> 독자는 능동적이다." and second.paragraph == first.paragraph
    assert third.paragraph == ""  # no_paragraph


def test_zero_based_flat_answers_are_shifted():
    items = convert("flat", [FIXTURES / "flat_zero.csv"], zero_based=True).items
    assert [(i.id, i.answer) for i in items] == [("flat_zero-z1", 1), ("flat_zero-z2", 4)]
    assert items[1].paragraph == ""


@pytest.mark.parametrize("fmt", ["kmmlu", "haerae", "click", "kice"])
def test_converted_files_pass_check(tmp_path, fmt):
    source = {"kmmlu": "kmmlu.csv", "haerae": "haerae.csv", "click": "click.json", "kice": "kice.json"}[fmt]
    output = tmp_path / f"{fmt}.csv"
    refused = data_cli("convert", "--format", fmt, str(FIXTURES / source), "--output", str(output), cwd=tmp_path)
    if fmt != "kice":  # every other fixture holds a bad record
        assert refused.returncode == 2 and not output.exists()
    converted = data_cli(
        "convert", "--format", fmt, str(FIXTURES / source), "--output", str(output), "--skip-invalid", cwd=tmp_path
    )
    assert converted.returncode == 0, converted.stderr
    assert data_cli("check", str(output), cwd=tmp_path).returncode == 0
    if fmt != "kice":
        assert output.with_name(f"{fmt}.rejects.jsonl").read_text(encoding="utf-8").count("\n") == 1


def test_shuffled_copies_keep_the_answer_text_and_the_group():
    item = Item("q", "같은 지문", "질문?", ("가", "나", "다", "라"), 3)
    items = shuffle_choices([item], copies=3, seed=1)
    assert len(items) == 4 and len({i.choices for i in items}) == 4
    assert all(i.choices[i.answer - 1] == "다" for i in items)
    assert {paragraph_key(i) for i in items} == {paragraph_key(item)}


def test_augmented_copies_never_straddle_the_split():
    items = [
        Item(f"q{n}", "" if n % 2 else f"지문 {n}", f"질문 {n}?", ("가", "나", "다", "라"), n % 4 + 1)
        for n in range(60)
    ]
    train, val = grouped_split(shuffle_choices(items, copies=2, seed=0), val_fraction=0.2, seed=0)
    origin = lambda i: i.metadata.get("augmented_from", i.id)  # noqa: E731
    assert {origin(i) for i in train}.isdisjoint({origin(i) for i in val})


def test_balance_makes_answer_positions_uniform_and_keeps_answers():
    items = [Item(f"q{n}", "지문", f"질문 {n}?", ("가", "나", "다", "라", "마"), 1 if n < 40 else 5) for n in range(50)]
    balanced = balance_answers(items, seed=0)
    assert Counter(i.answer for i in balanced) == {1: 10, 2: 10, 3: 10, 4: 10, 5: 10}
    for before, after in zip(items, balanced, strict=True):
        assert after.choices[after.answer - 1] == before.choices[before.answer - 1]
        assert sorted(after.choices) == sorted(before.choices) and after.id == before.id


def test_merge_drops_cross_source_duplicates_and_says_where_from():
    a = [Item("a1", "", "한글을 만든 왕은?", ("태조", "세종"), 2), Item("a2", "", "다른 질문?", ("가", "나"), 1)]
    b = [Item("b1", "지문", "한글을  만든 왕은 ?", ("태조", "세종 "), 2)]
    kept, removed = merge([("a.csv", a), ("b.csv", b)])
    assert [i.id for i in kept] == ["a1", "a2"]
    assert [(r.id, r.source, r.kept_id, r.kept_source) for r in removed] == [("b1", "b.csv", "a1", "a.csv")]


def test_overlap_finds_planted_near_duplicates_and_nothing_else():
    train = [
        Item(
            "t1",
            "조선 후기에는 실학이 등장하여 실용적인 학문을 강조하였다. 정약용은 목민심서를 저술하였다.",
            "질문?",
            ("가", "나"),
            1,
        ),
        Item("t2", "광합성은 빛에너지를 화학에너지로 바꾸는 과정으로, 엽록체에서 일어난다.", "질문?", ("가", "나"), 1),
        Item("t3", "", "다음 중 대한민국의 수도로 옳은 것은 무엇인가?", ("서울", "부산", "대구"), 1),
    ]
    test = [
        Item(
            "x1",
            "조선 후기에는 실학이 등장하여 실용적인 학문을 강조하였다 . 정약용은 목민심서를 저술했다.",
            "물음?",
            ("다", "라"),
            1,
        ),  # near-duplicate paragraph of t1
        Item(
            "x2", "", "다음 중 대한민국의 수도로 옳은 것은 무엇인가?", ("서울", "부산", "대구"), None
        ),  # exact question
        Item(
            "x3", "화산은 마그마가 지표로 분출하여 만들어진 지형으로, 다양한 암석을 만든다.", "질문?", ("가", "나"), 1
        ),
        Item("x4", "광합성은 식물의 잎에서 일어난다고 배웠지만 뿌리는 그렇지 않다고 한다.", "질문?", ("가", "나"), 1),
    ]
    found = find_overlap(train, test, threshold=0.8)
    assert {(o.test_id, o.train_id, o.field) for o in found} == {
        ("x1", "t1", "paragraph"),
        ("x2", "t3", "question+choices"),
    }
    assert next(o for o in found if o.test_id == "x2").similarity == 1.0


def test_split_command_writes_grouped_files(tmp_path):
    items = [Item(f"q{n}", f"지문 {n // 3}", f"질문 {n}?", ("가", "나", "다", "라"), n % 4 + 1) for n in range(60)]
    write_items(items, tmp_path / "all.csv")
    result = data_cli(
        "split",
        str(tmp_path / "all.csv"),
        "--train-output",
        str(tmp_path / "train.csv"),
        "--val-output",
        str(tmp_path / "val.csv"),
        "--val-fraction",
        "0.2",
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr
    train, val = load_items(tmp_path / "train.csv"), load_items(tmp_path / "val.csv")
    assert len(train) + len(val) == 60 and len(val) == 12
    assert {paragraph_key(i) for i in train}.isdisjoint({paragraph_key(i) for i in val})


def test_augment_and_overlap_commands_run_on_the_sample_data(tmp_path):
    output = tmp_path / "augmented.csv"
    result = data_cli(
        "augment",
        str(REPO / "data" / "sample_train.csv"),
        "--shuffle-choices",
        "2",
        "--output",
        str(output),
        cwd=tmp_path,
    )
    assert result.returncode == 0 and len(load_items(output)) == 160 * 3
    # A test file holding a verbatim copy of a training item (under another id) and an unrelated item.
    copied = replace(load_items(REPO / "data" / "sample_train.csv")[0], id="copied")
    unrelated = Item(
        "unrelated", "완전히 다른 지문으로 겹치는 글자가 거의 없다 ㅋㅋ", "무엇인가?", ("가", "나", "다", "라"), 1
    )
    write_items([copied, unrelated], tmp_path / "test.csv", "flat")
    report = data_cli("overlap", str(output), str(tmp_path / "test.csv"), cwd=tmp_path)
    assert report.returncode == 0, report.stderr
    assert report.stdout.startswith("1 test item(s) overlap the training file"), report.stdout
    listed = [line.split()[0] for line in report.stdout.splitlines()[1:]]
    assert set(listed) == {"copied"} and "similarity 1.000" in report.stdout


CSATQA_INSTRUCTIONS = [
    "### Context:\n다음 글을 읽고 물음에 답하시오. 국어의 음운 변동에는 교체, 탈락, 첨가, 축약이 있다.\n\n"
    "### Question:\n윗글의 내용과 일치하는 것은?\n\n"
    "### Options:\n(1) 음운 변동은 두 가지이다.\n(2) 첨가는 음운 변동이 아니다.\n(3) 축약은 음운 변동의 하나이다.\n"
    "(4) 탈락은 교체와 같다.\n(5) 교체는 없다.",
    "### Question:\n다음 중 맞춤법에 맞는 것은?\n\n"
    "### Options:\n(1) 깍뚜기 (2) 깍두기 (3) 깍둑이 (4) 깎두기 (5) 깍뚝이",
    "### Question:\n보기가 없는 문항\n\n### Options:\n(2) 하나 (1) 둘",
]


def test_csatqa_xlsx_instructions_split_into_context_question_and_options(tmp_path):
    import openpyxl

    workbook = openpyxl.Workbook()
    sheet = workbook.active
    sheet.append(["instruction", "answer"])
    for instruction, answer in zip(CSATQA_INSTRUCTIONS, [3, 2, 1], strict=True):
        sheet.append([instruction, answer])
    workbook.save(tmp_path / "csatqa.xlsx")
    conversion = convert("csatqa", [tmp_path / "csatqa.xlsx"])
    first, second = conversion.items
    assert first.paragraph.startswith("다음 글을 읽고") and first.question == "윗글의 내용과 일치하는 것은?"
    assert first.choices[2] == "축약은 음운 변동의 하나이다." and first.answer == 3 and first.num_choices == 5
    assert second.paragraph == "" and second.choices == ("깍뚜기", "깍두기", "깍둑이", "깎두기", "깍뚝이")
    assert [(p.item_id, p.column) for p in conversion.problems] == [("csatqa-csatqa-3", "instruction")]


def test_balanced_shift_rows_make_positions_uniform_even_when_every_answer_is_one():
    from suneung_lit.data.augmenting import balanced_shift_rows

    # 8 four-choice items, every answer "1": rows hold each item's 4 cyclic shifts (answer at shift).
    item_index = [i for i in range(8) for _ in range(4)]
    shift = [s for _ in range(8) for s in range(4)]
    rows = balanced_shift_rows(item_index, shift, [4] * 32, seed=0)
    assert [item_index[r] for r in rows] == list(range(8))
    assert Counter(shift[r] for r in rows) == {0: 2, 1: 2, 2: 2, 3: 2}
    assert balanced_shift_rows(item_index, shift, [4] * 32, seed=0) == rows
    assert balanced_shift_rows(item_index, shift, [4] * 32, seed=1) != rows


def test_balanced_training_serves_each_item_once_per_epoch_with_uniform_answers(tmp_path, tiny_model_dir):
    from dataclasses import replace

    from suneung_lit.data.datamodule import MultipleChoiceDataModule

    skewed = [replace(item, answer=1) for item in make_items(40, seed=3)]  # the text no longer matters here
    write_items(skewed, tmp_path / "train.csv")
    write_items(make_items(8, seed=4, prefix="val"), tmp_path / "val.csv")
    datamodule = MultipleChoiceDataModule(
        str(tiny_model_dir),
        train_path=str(tmp_path / "train.csv"),
        val_path=str(tmp_path / "val.csv"),
        max_length=256,
        train_batch_size=8,
        balance_train=True,
    )
    datamodule.setup("fit")
    loader = datamodule.train_dataloader()
    epochs = []
    for _ in range(2):
        batches = list(loader)
        ids = [i for b in batches for i in b["id"]]
        assert sorted(ids) == sorted(item.id for item in skewed) and len(batches) == len(loader)
        pairs = [zip(b["num_choices"].tolist(), b["answer"].tolist(), strict=True) for b in batches]
        counts = Counter(pair for batch in pairs for pair in batch)
        for n in (4, 5):
            per_position = [counts[(n, p)] for p in range(n)]
            assert max(per_position) - min(per_position) <= 1, counts
        epochs.append({i: a for b in batches for i, a in zip(b["id"], b["answer"].tolist(), strict=True)})
    assert epochs[0] != epochs[1]  # each epoch deals new positions


def test_a_train_file_that_is_all_validation_ids_is_refused_not_emptied(tmp_path, tiny_model_dir):
    from suneung_lit.data.datamodule import MultipleChoiceDataModule

    write_items(make_items(6, seed=5), tmp_path / "same.csv")
    datamodule = MultipleChoiceDataModule(
        str(tiny_model_dir), train_path=str(tmp_path / "same.csv"), val_path=str(tmp_path / "same.csv"),
        max_length=256, cache_dir=str(tmp_path / "cache"),
    )  # fmt: skip
    with pytest.raises(DataValidationError, match=r"same\.csv: no training items left: 6 of its 6 ids are validation"):
        datamodule.setup("fit")


def test_validate_on_a_file_of_its_own_reads_no_training_file(tmp_path, tiny_model_dir):
    from suneung_lit.data.datamodule import MultipleChoiceDataModule

    write_items(make_items(6, seed=6, prefix="heldout"), tmp_path / "heldout.csv")
    # As in configs/qwen32b.yaml: a training file that is not here, and corrections for the competition's ids.
    datamodule = MultipleChoiceDataModule(
        str(tiny_model_dir), train_path=str(tmp_path / "no-such-train.csv"), val_path=str(tmp_path / "heldout.csv"),
        corrections_path=str(REPO / "data" / "corrections" / "generationfornlp_train.csv"),
        max_length=256, cache_dir=str(tmp_path / "cache"),
    )  # fmt: skip
    datamodule.setup("validate")
    assert datamodule.items["train"] == [] and len(datamodule.items["val"]) == 6
    with pytest.raises(DataValidationError, match=r"no-such-train\.csv.*file not found"):
        datamodule.setup("fit")
