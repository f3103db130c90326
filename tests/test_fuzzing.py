"""Property-based input fuzzing: the loader accepts a row or names it in its own error, nothing else."""

from __future__ import annotations

import contextlib
import csv
import io
import json
import tempfile
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from suneung_lit.data.records import DataValidationError, load_items

FUZZ_EXAMPLES = 300
ADVERSARIAL_TEXT = st.one_of(
    st.text(max_size=40),
    st.text(alphabet=st.characters(categories=["Cc", "Co", "Zs", "Cf"]), max_size=20),  # control, private use
    st.sampled_from(['"', '""', "'", "{", "[", "]", "}", "\\", ",", "\n", "\r\n", "nan", "None", "null", "\x00"]),
    st.text(alphabet="가나다라 ,.'\"[]{}", min_size=2000, max_size=4000),  # huge fields
)
CHOICES = st.one_of(
    st.lists(ADVERSARIAL_TEXT, min_size=0, max_size=7),  # wrong lengths and empty choices
    st.lists(st.integers(), max_size=6),
    st.just("not a list"),
)
ANSWERS = st.one_of(st.integers(-3, 9), st.floats(allow_nan=True), st.text(max_size=5), st.none(), st.booleans())


@st.composite
def competition_rows(draw) -> list[list[str]]:
    rows = []
    for n in range(draw(st.integers(1, 4))):
        problem = {"question": draw(ADVERSARIAL_TEXT), "choices": draw(CHOICES), "answer": draw(ANSWERS)}
        problems = draw(st.one_of(st.just(repr(problem)), ADVERSARIAL_TEXT))  # sometimes not a dict at all
        row_id = draw(st.one_of(st.just(f"q{n}"), ADVERSARIAL_TEXT))
        rows.append([row_id, draw(ADVERSARIAL_TEXT), problems, draw(ADVERSARIAL_TEXT)])
    return rows


def check(path: Path, expected_rows: int) -> None:
    try:
        items = load_items(path)
    except DataValidationError as err:
        assert err.problems, "a validation error must list its problems"
        for problem in err.problems:
            assert problem.path == str(path)
            assert problem.row is not None or problem.column is None or problem.column.startswith("problems")
        return
    assert len(items) == expected_rows, "a row was dropped without an error"


@settings(max_examples=FUZZ_EXAMPLES, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(rows=competition_rows())
def test_fuzzed_competition_rows_load_or_fail_with_a_named_row(rows):
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(["id", "paragraph", "problems", "question_plus"])
    writer.writerows(rows)
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "fuzz.csv"
        path.write_text(buffer.getvalue(), encoding="utf-8", errors="surrogatepass")
        check(path, len(rows))


@settings(max_examples=FUZZ_EXAMPLES, deadline=None)
@given(data=st.binary(max_size=600), header=st.booleans())
def test_arbitrary_bytes_never_raise_another_exception_type(data, header):
    prefix = b"id,paragraph,question,choices,answer\n" if header else b""
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "fuzz.csv"
        path.write_bytes(prefix + data)
        # Any exception but the package's own validation error fails the test.
        with contextlib.suppress(DataValidationError):
            load_items(path)


@settings(max_examples=FUZZ_EXAMPLES, deadline=None)
@given(
    records=st.lists(
        st.fixed_dictionaries(
            {
                "id": st.one_of(st.text(max_size=5), st.integers()),
                "paragraph": ADVERSARIAL_TEXT,
                "question": ADVERSARIAL_TEXT,
                "choices": CHOICES,
                "answer": ANSWERS,
            }
        ),
        min_size=1,
        max_size=4,
    )
)
def test_fuzzed_jsonl_records_load_or_fail_with_a_named_row(records):
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "fuzz.jsonl"
        path.write_text("\n".join(json.dumps(r) for r in records) + "\n", encoding="utf-8")
        check(path, len(records))


# --- the same kind of input through the commands themselves ----------------------------------------------------

CLI_EXAMPLES = 4  # each example runs the tiny model twice; the loader tests above take the many examples
CLI_RECORD = st.fixed_dictionaries(
    {
        "paragraph": st.one_of(ADVERSARIAL_TEXT, st.text(alphabet="가나다라 ", min_size=3000, max_size=6000)),
        "question": st.one_of(st.text(max_size=40), st.text(alphabet=st.characters(categories=["Lo", "So", "Cf"]))),
        "choices": st.lists(st.text(min_size=0, max_size=12), min_size=2, max_size=6),
        "answer": st.one_of(st.integers(-1, 7), st.none()),
    }
)


@pytest.mark.slow
@settings(max_examples=CLI_EXAMPLES, deadline=None, suppress_health_check=list(HealthCheck))
@given(records=st.lists(CLI_RECORD, min_size=1, max_size=4))
def test_fuzzed_files_through_check_validate_and_predict_never_lose_an_id(records, tiny_model_dir, capsys):
    from suneung_lit.data.__main__ import main as data_main

    from .test_input_shapes import cli, predicted_ids

    with tempfile.TemporaryDirectory() as folder:
        work = Path(folder)
        path = work / "fuzz.jsonl"
        lines = [json.dumps({"id": f"f{n}", **record}, ensure_ascii=False) for n, record in enumerate(records)]
        path.write_text("\n".join(lines) + "\n", encoding="utf-8")
        assert data_main(["check", str(path), "--tokenizer", str(tiny_model_dir)]) in (0, 2)
        for command, args in (
            ("predict", ["--data.predict_path", str(path)]),
            ("validate", ["--data.train_path", "null", "--data.val_path", str(path)]),
        ):
            try:
                cli(work, tiny_model_dir, command, *args, capsys=capsys)
            except DataValidationError as err:  # the package's own error, naming this file
                assert err.problems and all(problem.path == str(path) for problem in err.problems), str(err)
                continue
            if command == "predict":
                assert predicted_ids(work) == [f"f{n}" for n in range(len(records))]
