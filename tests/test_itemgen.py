"""Generated items: the writer's JSON checked against the schema, the filters applied in order by a real model, and
a run whose every passage ends up in items.jsonl or rejects.jsonl exactly once, resumable after kill -9."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path

import pytest

from suneung_lit.data.__main__ import main as data_main
from suneung_lit.data.records import load_items
from suneung_lit.itemgen.candidates import (
    TEMPLATES,
    Rejected,
    parse_candidate,
    validator_prompt,
    writer_examples,
    writer_prompt,
)
from suneung_lit.itemgen.run import Filters, Outputs, judge
from suneung_lit.pretraining.corpus import Passage

from .conftest import KLUE_READING, REPO

PASSAGE = Passage("세종은 1443년에 훈민정음을 창제하였다. 훈민정음은 1446년에 반포되었다.", "test:1", "p1")
GOOD = {
    "question": "훈민정음이 반포된 해는?",
    "choices": ["1443년", "1446년", "1450년", "1392년", "1592년"],
    "answer": 2,
}


def written(record) -> str:
    return "이렇게 만들었습니다.\n" + json.dumps(record, ensure_ascii=False) + "\n끝."


def test_a_well_formed_item_becomes_a_flat_item_on_its_passage():
    item = parse_candidate(written(GOOD), PASSAGE, 5, False, "writer-x")
    assert item.id == "gen-p1" and item.paragraph == PASSAGE.text and item.answer == 2
    assert item.choices[1] == "1446년"
    assert dict(item.metadata) == {"source": "generated", "generated_by": "writer-x", "passage_id": "p1"}
    assert parse_candidate(written({**GOOD, "answer": "2"}), PASSAGE, 5, False, "w").answer == 2


@pytest.mark.parametrize(
    "text, complaint",
    [
        ("문제를 만들 수 없습니다.", "no JSON object"),
        (written([1, 2]), "no JSON object"),
        (written({**GOOD, "question": " "}), "no question"),
        (written({**GOOD, "choices": GOOD["choices"][:4]}), "4 choices, 5 asked for"),
        (written({**GOOD, "choices": "1443년"}), "no list of choices"),
        (written({**GOOD, "choices": ["a", "b", "", "d", "e"]}), "an empty or non-text choice"),
        (written({**GOOD, "choices": ["a", "b", "a", "d", "e"]}), "two choices are the same"),
        (written({**GOOD, "answer": 6}), "answer 6 is not a number from 1 to 5"),
        (written({**GOOD, "answer": "②"}), "answer '②'"),
        (written({**GOOD, "answer": True}), "answer True"),
    ],
)
def test_a_malformed_item_is_rejected_at_the_schema_filter_with_the_reason(text, complaint):
    rejected = parse_candidate(text, PASSAGE, 5, False, "w")
    assert isinstance(rejected, Rejected) and rejected.filter == "schema"
    assert complaint in rejected.reason


def test_a_bogi_is_required_when_asked_for_and_the_prompts_carry_what_they_judge():
    assert "<보기>" in parse_candidate(written(GOOD), PASSAGE, 5, True, "w").reason
    with_bogi = parse_candidate(written({**GOOD, "question_plus": "ㄱ. 반포"}), PASSAGE, 5, True, "w")
    assert with_bogi.question_plus == "ㄱ. 반포"
    prompt = writer_prompt(PASSAGE, 4, True, (TEMPLATES / "write.txt").read_text(encoding="utf-8"))
    assert PASSAGE.text in prompt and "4지선다" in prompt and "question_plus" in prompt
    shown = validator_prompt(with_bogi, (TEMPLATES / "validate.txt").read_text(encoding="utf-8"))
    assert "2. 1446년" in shown and "표시된 정답: 2" in shown and "<보기>\nㄱ. 반포" in shown


def solved(item_id: str, paragraph: str, choices: int = 5, bogi: str = "", answer: int = 2):
    from suneung_lit.data.records import Item

    return Item(item_id, paragraph, f"{item_id}의 문제", tuple(f"{item_id} 선택지 {n}" for n in range(choices)),
                answer, bogi)  # fmt: skip


HANGEUL = Passage("훈민정음 창제 이후 한글 문헌이 늘었다. 훈민정음 해례본은 창제 원리를 밝힌다.", "test:2", "p2")
POOL = [
    solved("near", "훈민정음 해례본에는 훈민정음 창제 원리와 한글 문헌의 예가 실려 있다."),
    solved("far", "반도체 수출이 석 달 연속 늘었다고 산업통상자원부가 밝혔다."),
    solved("four", "훈민정음 창제 원리와 한글 문헌, 해례본 이야기.", choices=4),
    solved("bogi", "훈민정음 창제 원리와 한글 문헌, 해례본 이야기.", bogi="ㄱ. 해례본"),
    solved("same", HANGEUL.text),  # an item on the passage itself: never shown
]


def test_the_writer_is_shown_the_nearest_solved_items_shaped_like_the_ones_it_must_write():
    [shown] = writer_examples([HANGEUL], POOL, 1, 5, False, "bm25")[HANGEUL.id]
    assert shown.id == "near"
    two = writer_examples([HANGEUL], POOL, 2, 5, False, "bm25")[HANGEUL.id]
    assert [e.id for e in two] == ["near", "far"]  # not the 4-choice one, the <보기> one or the passage's own
    assert [e.id for e in writer_examples([HANGEUL], POOL, 1, 4, False, "bm25")[HANGEUL.id]] == ["four"]
    assert [e.id for e in writer_examples([HANGEUL], POOL, 1, 5, True, "random")[HANGEUL.id]] == ["bogi"]
    with pytest.raises(ValueError, match="1 labelled items with 4 choices and no <보기> to show as examples, 2"):
        writer_examples([HANGEUL], POOL, 2, 4, False, "bm25")


def test_an_example_is_shown_in_the_json_the_writer_must_answer_so_it_parses_back_as_itself():
    template = (TEMPLATES / "write.txt").read_text(encoding="utf-8")
    for example, with_bogi in ((POOL[0], False), (POOL[3], True)):
        prompt = writer_prompt(HANGEUL, 5, with_bogi, template, [example])
        assert prompt.index(example.paragraph) < prompt.index(HANGEUL.text)
        shown = prompt.split("예시 문제:\n", 1)[1]
        back = parse_candidate(shown, Passage(example.paragraph, "x", example.id), 5, with_bogi, "w")
        assert (back.question, back.choices, back.answer, back.question_plus) == (
            example.question, example.choices, example.answer, example.question_plus)  # fmt: skip
    # Without examples the prompt is the one the package wrote before examples existed.
    assert "예시" not in writer_prompt(HANGEUL, 5, False, template)


@pytest.fixture(scope="module")
def tiny_judge(tiny_model_dir):
    from suneung_lit.itemgen.run import load_model

    return load_model(str(tiny_model_dir), "none", "float32", batch_size=4)


def klue_candidates(count: int = 3):
    """Real KLUE items on ``count`` different paragraphs (the file has several items per paragraph)."""
    first = {}
    for item in load_items(KLUE_READING):
        first.setdefault(item.paragraph, item)
    return [replace(item, id=f"gen-{n}") for n, item in enumerate(list(first.values())[:count])]


def test_each_filter_stops_what_fails_it_and_nothing_after_it_runs(tiny_judge):
    items = klue_candidates()
    fate = judge(items, tiny_judge, Filters(validator_threshold=1.01))
    assert {r.filter for r in fate.values()} == {"validator"} and "P(YES)" in fate["gen-0"].reason
    every = Filters(validator_threshold=0.0, min_shifts_correct=0, blind_max=1.0)
    assert judge(items, tiny_judge, every) == {item.id: None for item in items}
    fate = judge(items, tiny_judge, replace(every, min_shifts_correct=6))
    assert {r.filter for r in fate.values()} == {"answerable"} and "shifts with the passage, 6 needed" in str(fate)
    fate = judge(items, tiny_judge, replace(every, blind_max=-1.0))
    assert {r.filter for r in fate.values()} == {"blind"}
    test_file = [replace(items[1], id="test-7")]
    fate = judge(items, tiny_judge, every, test_file)
    assert fate["gen-1"].filter == "overlap" and "test-7" in fate["gen-1"].reason
    assert fate["gen-0"] is None and fate["gen-2"] is None


def test_scoring_under_shifts_counts_each_items_own_copies_and_blind_removes_the_passage(tiny_judge):
    from suneung_lit.data.shifting import cyclic_shift

    items = klue_candidates(2)
    counts = tiny_judge.correct_under_shifts(items)
    for item, count in zip(items, counts, strict=True):
        copies = [cyclic_shift(item, s) for s in range(item.num_choices)]
        assert count == sum(p == c.answer for p, c in zip(tiny_judge.answers(copies), copies, strict=True))
    blind = tiny_judge.correct_under_shifts(items, blind=True)
    copies = [cyclic_shift(replace(items[0], paragraph=""), s) for s in range(items[0].num_choices)]
    assert blind[0] == sum(p == c.answer for p, c in zip(tiny_judge.answers(copies), copies, strict=True))


# --- runs -----------------------------------------------------------------------------------------------------


def passages_file(folder: Path, count: int) -> Path:
    paragraphs = list(dict.fromkeys(item.paragraph for item in load_items(KLUE_READING)))[:count]
    path = folder / "passages.jsonl"
    path.write_text("".join(json.dumps({"id": f"k{n}", "text": t}, ensure_ascii=False) + "\n"
                            for n, t in enumerate(paragraphs)), encoding="utf-8")  # fmt: skip
    return path


def recorded_ids(output: Path) -> list[str]:
    ids = []
    for name in ("items.jsonl", "rejects.jsonl"):
        path = output / name
        if path.exists():
            ids += [json.loads(line)["passage_id"] for line in path.read_text(encoding="utf-8").splitlines()]
    return ids


def generate_args(passages: Path, model: Path, output: Path, *extra: str) -> list[str]:
    return ["generate", str(passages), "--model", str(model), "--output", str(output), "--max-new-tokens", "8",
            "--batch-size", "2", "--quantization", "none", "--dtype", "float32", *extra]  # fmt: skip


def test_every_passage_is_recorded_once_with_a_summary_and_a_second_run_adds_nothing(tiny_model_dir, tmp_path, capsys):
    passages = passages_file(tmp_path, 3)
    output = tmp_path / "out"
    assert data_main(generate_args(passages, tiny_model_dir, output)) == 0
    assert sorted(recorded_ids(output)) == ["k0", "k1", "k2"]
    summary = json.loads((output / "summary.json").read_text())
    assert summary["accepted"] + sum(summary["rejected"].values()) == 3 and summary["this_run"]["passages"] == 3
    # A random tiny model writes no JSON: each reject keeps the writer's text and the reason.
    rejects = [json.loads(line) for line in (output / "rejects.jsonl").read_text().splitlines()]
    assert all(r["filter"] == "schema" and "text" in r for r in rejects)
    assert data_main(generate_args(passages, tiny_model_dir, output)) == 0
    assert sorted(recorded_ids(output)) == ["k0", "k1", "k2"]
    assert json.loads((output / "summary.json").read_text())["this_run"]["passages"] == 0


def test_accepted_items_read_back_as_a_flat_file(tmp_path):
    outputs = Outputs(tmp_path)
    item = parse_candidate(written(GOOD), PASSAGE, 5, False, "writer-x")
    outputs.accept(item)
    [back] = load_items(tmp_path / "items.jsonl")
    assert (back.id, back.choices, back.answer, back.metadata["passage_id"]) == (item.id, item.choices, 2, "p1")
    # A resumed run counts the keys of what is already accepted, so the summary covers every item.
    assert outputs.keys == Outputs(tmp_path).keys == {2: 1}


def test_a_half_written_last_record_is_dropped_and_its_passage_done_again(tmp_path):
    (tmp_path / "rejects.jsonl").write_text('{"passage_id": "a", "filter": "schema"}\n{"passage_id": "b", "fil')
    outputs = Outputs(tmp_path)
    assert outputs.done == {"a"} and outputs.counts["schema"] == 1
    assert (tmp_path / "rejects.jsonl").read_text() == '{"passage_id": "a", "filter": "schema"}\n'


def test_bad_passages_stop_the_command_before_a_model_loads(tmp_path, capsys):
    bad = tmp_path / "passages.jsonl"
    bad.write_text('{"id": "a", "text": "하나"}\n{"id": "a", "text": "둘"}\n', encoding="utf-8")
    assert data_main(generate_args(bad, tmp_path / "no-model", tmp_path / "out")) == 2
    assert f"{bad}:2: passage id 'a' again (first at {bad}:1)" in capsys.readouterr().err
    bad.write_text('{"id": "a", "body": "하나"}\n', encoding="utf-8")
    assert data_main(generate_args(bad, tmp_path / "no-model", tmp_path / "out")) == 2
    assert f"{bad}:1: no 'text' field" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


@pytest.mark.slow
def test_a_run_killed_mid_way_resumes_and_records_each_passage_exactly_once(tiny_model_dir, tmp_path):
    passages = passages_file(tmp_path, 8)
    output = tmp_path / "out"
    command = [sys.executable, "-m", "suneung_lit.data", *generate_args(passages, tiny_model_dir, output)]
    command[command.index("--batch-size") + 1] = "1"
    worker = subprocess.Popen(command, cwd=REPO, stderr=subprocess.DEVNULL, start_new_session=True)
    deadline = time.monotonic() + 300
    while len(recorded_ids(output)) < 2 and time.monotonic() < deadline and worker.poll() is None:
        time.sleep(0.05)
    os.killpg(worker.pid, signal.SIGKILL)
    worker.wait()
    before = recorded_ids(output)
    assert 2 <= len(before) < 8, "killed mid-way"
    assert data_main(generate_args(passages, tiny_model_dir, output)) == 0
    after = recorded_ids(output)
    assert sorted(after) == [f"k{n}" for n in range(8)] and after[: len(before)] == before
