"""Loading and validating item files: both CSV shapes, JSON Lines, and clear errors for broken input."""

from __future__ import annotations

import json

import pytest

from suneung_lit.data.records import DataValidationError, Item, answers_elsewhere, load_items, write_items

COMPETITION_HEADER = "id,paragraph,problems,question_plus\n"


def write(tmp_path, name: str, text: str | bytes):
    path = tmp_path / name
    path.write_bytes(text if isinstance(text, bytes) else text.encode("utf-8"))
    return path


def test_reads_competition_shape_with_bom(tmp_path):
    problems = "{'question': '윗글의 주제는?', 'choices': ['가', '나', '다', '라'], 'answer': 2}"
    path = write(tmp_path, "c.csv", "\ufeff" + COMPETITION_HEADER + f'q1,지문입니다.,"{problems}",\n')
    [item] = load_items(path)
    assert item == Item("q1", "지문입니다.", "윗글의 주제는?", ("가", "나", "다", "라"), 2, "")


def test_test_file_without_answers_is_valid(tmp_path):
    problems = "{'question': '질문?', 'choices': ['가', '나', '다', '라', '마'], 'answer': ''}"
    path = write(tmp_path, "t.csv", COMPETITION_HEADER + f'q1,지문,"{problems}",보기 내용\n')
    [item] = load_items(path)
    assert item.answer is None and item.question_plus == "보기 내용" and item.num_choices == 5


def test_question_plus_inside_problems_dict_is_used(tmp_path):
    problems = "{'question': '질문?', 'choices': ['가', '나'], 'answer': 1, 'question_plus': '<보기> ㄱ'}"
    path = write(tmp_path, "t.csv", COMPETITION_HEADER + f'q1,지문,"{problems}",\n')
    assert load_items(path)[0].question_plus == "<보기> ㄱ"


def test_reads_flat_csv_and_keeps_extra_columns_as_metadata(tmp_path):
    header = "id,paragraph,question,choices,answer,question_plus,source\n"
    text = header + 'f1,지문,질문?,"[""가"", ""나"", ""다""]",3,nan,kmmlu\n'
    [item] = load_items(write(tmp_path, "f.csv", text))
    assert item.choices == ("가", "나", "다") and item.answer == 3
    assert item.question_plus == "" and item.metadata == {"source": "kmmlu"}


def test_reads_jsonl_flat_shape(tmp_path):
    rows = [{"id": "j1", "paragraph": "", "question": "질문?", "choices": ["가", "나", "다", "라"], "answer": 4}]
    path = write(tmp_path, "f.jsonl", "\n".join(json.dumps(r, ensure_ascii=False) for r in rows) + "\n")
    assert load_items(path)[0].answer == 4


def test_a_jsonl_record_with_unicode_line_separators_inside_a_string_stays_one_record(tmp_path):
    # JSON allows U+2028/U+2029/U+0085 unescaped in strings; str.splitlines would cut the record at each.
    text = "첫 문장.\u2028둘째 문장.\u2029셋째\x85넷째\x0c다섯째"
    rows = [{"id": f"j{n}", "paragraph": text, "question": "질문?", "choices": ["가", "나", "다", "라"], "answer": 2}
            for n in range(2)]  # fmt: skip
    path = write(tmp_path, "f.jsonl", "\r\n".join(json.dumps(r, ensure_ascii=False) for r in rows) + "\r\n")
    items = load_items(path)
    assert [item.id for item in items] == ["j0", "j1"] and items[0].paragraph == text


def test_write_items_round_trips_both_shapes(tmp_path):
    items = [Item("a", '지문, "인용"', "질문?", ("가", "나, 다", "라"), 2, "보기", {"source": "x"})]
    for shape in ("flat", "competition"):
        path = tmp_path / f"{shape}.csv"
        write_items(items, path, shape)
        assert load_items(path) == items


def good_problems(**override) -> str:
    problem = {"question": "질문?", "choices": ["가", "나", "다", "라"], "answer": 1, **override}
    return repr(problem).replace('"', '""')


# (name, file text, expected column in the error, expected id in the error)
BROKEN_INPUTS = [
    ("missing problems column", "id,paragraph\nq1,지문\n", None, None),
    ("duplicate id", COMPETITION_HEADER + f'q1,a,"{good_problems()}",\nq1,b,"{good_problems()}",\n', "id", "q1"),
    ("unparsable problems", COMPETITION_HEADER + "q1,a,\"{'question': \",\n", "problems", "q1"),
    ("problems is a list", COMPETITION_HEADER + 'q1,a,"[1, 2]",\n', "problems", "q1"),
    ("one choice", COMPETITION_HEADER + f'q1,a,"{good_problems(choices=["가"])}",\n', "problems.choices", "q1"),
    (
        "six choices",
        COMPETITION_HEADER + f'q1,a,"{good_problems(choices=list("가나다라마바"))}",\n',
        "problems.choices",
        "q1",
    ),
    ("empty question", COMPETITION_HEADER + f'q1,a,"{good_problems(question=" ")}",\n', "problems.question", "q1"),
    ("answer out of range", COMPETITION_HEADER + f'q1,a,"{good_problems(answer=5)}",\n', "problems.answer", "q1"),
    ("answer zero", COMPETITION_HEADER + f'q1,a,"{good_problems(answer=0)}",\n', "problems.answer", "q1"),
    ("answer not integer", COMPETITION_HEADER + f'q1,a,"{good_problems(answer="②")}",\n', "problems.answer", "q1"),
    ("answer fractional", COMPETITION_HEADER + f'q1,a,"{good_problems(answer=2.5)}",\n', "problems.answer", "q1"),
    (
        "empty choice",
        COMPETITION_HEADER + f'q1,a,"{good_problems(choices=["가", " ", "다"])}",\n',
        "problems.choices",
        "q1",
    ),
    (
        "choice not text",
        COMPETITION_HEADER + f'q1,a,"{good_problems(choices=["가", ["x"]])}",\n',
        "problems.choices",
        "q1",
    ),
    ("flat choices unparsable", "id,paragraph,question,choices,answer\nf1,a,질문?,[가 나,1\n", "choices", "f1"),
    ("flat answer text", 'id,paragraph,question,choices,answer\nf1,a,질문?,"[""가"",""나""]",둘\n', "answer", "f1"),
    ("empty id", COMPETITION_HEADER + f',a,"{good_problems()}",\n', "id", None),
    ("wrong field count", COMPETITION_HEADER + 'q1,a,"{}",x,extra\n', None, "q1"),
]


@pytest.mark.parametrize(("name", "text", "column", "item_id"), BROKEN_INPUTS, ids=[b[0] for b in BROKEN_INPUTS])
def test_broken_input_error_names_file_row_id_and_column(tmp_path, name, text, column, item_id):
    path = write(tmp_path, "bad.csv", text)
    with pytest.raises(DataValidationError) as caught:
        load_items(path)
    problem = caught.value.problems[0]
    assert problem.path == str(path) and str(path) in str(caught.value)
    assert problem.column == column
    assert problem.item_id == item_id
    if item_id is not None:
        assert problem.row is not None and f"id {item_id!r}" in str(caught.value)


def test_non_utf8_file_names_the_line(tmp_path):
    path = write(tmp_path, "latin.csv", COMPETITION_HEADER.encode() + b"q1,\xbf\xaa,x,\n")
    with pytest.raises(DataValidationError, match=r"not valid UTF-8 .*line 2"):
        load_items(path)


def test_every_problem_in_a_file_is_reported_at_once(tmp_path):
    rows = "".join(f'q{i},a,"{good_problems(answer=9)}",\n' for i in range(3))
    with pytest.raises(DataValidationError) as caught:
        load_items(write(tmp_path, "bad.csv", COMPETITION_HEADER + rows))
    assert [p.item_id for p in caught.value.problems] == ["q0", "q1", "q2"]


def test_literal_parsing_never_executes_code(tmp_path):
    payload = "__import__('os').system('echo pwned')"
    with pytest.raises(DataValidationError, match="cannot parse dict literal"):
        load_items(write(tmp_path, "evil.csv", COMPETITION_HEADER + f'q1,a,"{payload}",\n'))


def test_answers_in_another_column_load_with_answer_column(tmp_path):
    path = tmp_path / "answer_true.csv"
    problems = {"question": "옳은 것은?", "choices": ["가", "나", "다", "라"], "answer": ""}
    path.write_text(f'id,paragraph,problems,question_plus,answer_true\nq1,지문,"{problems!r}",,3\n', encoding="utf-8")
    unlabelled = load_items(path)
    assert unlabelled[0].answer is None and answers_elsewhere(unlabelled) == "answer_true"
    labelled = load_items(path, answer_column="answer_true")
    assert labelled[0].answer == 3 and "answer_true" not in labelled[0].metadata
    with pytest.raises(DataValidationError, match="answer_column 'gold' is not a column"):
        load_items(path, answer_column="gold")


def test_a_bad_value_in_the_answer_column_names_that_column(tmp_path):
    path = tmp_path / "bad.csv"
    path.write_text('id,paragraph,question,choices,answer_true\nq1,지문,질문,"[""가"", ""나""]",7\n', encoding="utf-8")
    with pytest.raises(DataValidationError, match="column 'answer_true'"):
        load_items(path, answer_column="answer_true")


def test_training_on_a_file_with_answers_in_another_column_stops_and_names_it(tmp_path, tiny_model_dir):
    from suneung_lit.data.datamodule import MultipleChoiceDataModule

    problem = {"question": "옳은 것은?", "choices": ["가", "나", "다", "라"], "answer": ""}
    rows = [f'q{n},지문 {n},"{problem!r}",,{n % 4 + 1}' for n in range(20)]
    path = tmp_path / "train.csv"
    path.write_text("id,paragraph,problems,question_plus,answer_true\n" + "\n".join(rows) + "\n", encoding="utf-8")
    plain = MultipleChoiceDataModule(str(tiny_model_dir), train_path=str(path), max_length=128)
    with pytest.raises(DataValidationError, match="set data.answer_column: answer_true"):
        plain.setup("fit")
    configured = MultipleChoiceDataModule(
        str(tiny_model_dir), train_path=str(path), max_length=128, answer_column="answer_true"
    )
    configured.setup("fit")
    assert sorted({item.answer for item in configured.items["train"] + configured.items["val"]}) == [1, 2, 3, 4]
