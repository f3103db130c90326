"""Each cleaning step on small hand-written Korean items, and the configurable pipeline with its report."""

from __future__ import annotations

import pytest

from suneung_lit.data.cleaning import (
    clean,
    describe_corrections,
    drop_duplicates,
    load_corrections,
    move_bogi_to_question_plus,
    normalize_whitespace,
    remove_bylines,
    strip_private_use,
)
from suneung_lit.data.records import DataValidationError, Item


def item(item_id="a", paragraph="지문이다.", question="질문은?", choices=("가", "나", "다", "라"), answer=1, plus=""):
    return Item(item_id, paragraph, question, tuple(choices), answer, plus)


def test_normalize_whitespace_fixes_pdf_spacing_before_punctuation():
    [cleaned], changed = normalize_whitespace([item(paragraph="  그는 떠났다 .  그리고   돌아왔다 ,  다시 .\n 끝 ")])
    assert cleaned.paragraph == "그는 떠났다. 그리고 돌아왔다, 다시.\n끝"
    assert changed == ["a"]


def test_normalize_whitespace_leaves_clean_items_alone():
    items = [item()]
    assert normalize_whitespace(items) == (items, [])


def test_strip_private_use_removes_pdf_glyphs_from_every_field():
    [cleaned], changed = strip_private_use(
        [item(paragraph="\U000f0854임원경제지\U000f0855", choices=("가\ue39e", "나"))]
    )
    assert cleaned.paragraph == "임원경제지" and cleaned.choices == ("가", "나") and changed == ["a"]


def test_bogi_block_in_paragraph_moves_to_question_plus():
    [cleaned], changed = move_bogi_to_question_plus([item(paragraph="본문 내용이다.\n<보기>\nㄱ. 첫째\nㄴ. 둘째")])
    assert cleaned.paragraph == "본문 내용이다."
    assert cleaned.question_plus == "ㄱ. 첫째\nㄴ. 둘째" and changed == ["a"]


def test_bogi_is_not_moved_over_an_existing_question_plus():
    original = item(paragraph="본문 〈보기〉 ㄱ", plus="이미 있음")
    assert move_bogi_to_question_plus([original]) == ([original], [])


@pytest.mark.parametrize(
    ("paragraph", "expected"),
    [
        ("검찰에 통보됐다. 하수정 기자 agatha77@hankyung.com", "검찰에 통보됐다."),
        ("10.2%였다.  세종=김주완/김유미 기자  kjwan@hankyung.com", "10.2%였다."),
        ("관심 대상”이라고 분석했다. 김진수/김보형 기자 true@hankyung.com", "관심 대상”이라고 분석했다."),
        ("지났다”고 지적했다. 베이징=김동윤 특파원/정인설 기자", "지났다”고 지적했다."),
        ("(서울=연합뉴스) 홍길동 기자 = 비가 왔다.", "비가 왔다."),
        ("지역 언론사 기자는 인터뷰했다.", "지역 언론사 기자는 인터뷰했다."),
    ],
)
def test_remove_bylines(paragraph, expected):
    [cleaned], _ = remove_bylines([item(paragraph=paragraph)])
    assert cleaned.paragraph == expected


def test_drop_duplicates_keeps_first_copy_and_reports_dropped_ids():
    kept, dropped = drop_duplicates([item("a"), item("b"), item("c", question="다른 질문?")])
    assert [i.id for i in kept] == ["a", "c"] and dropped == ["b"]


def test_duplicates_with_conflicting_answers_are_kept_and_reported():
    items, report = clean([item("a", answer=1), item("b", answer=2)], steps=["drop_duplicates"])
    assert [i.id for i in items] == ["a", "b"]
    assert "different answers" in str(report) and "('a', 'b')" in str(report)


def test_prediction_inputs_never_lose_rows():
    items, report = clean([item("a"), item("b")], allow_drops=False)
    assert [i.id for i in items] == ["a", "b"] and report.dropped_ids == []


def test_corrections_file_drops_and_fixes_labels(tmp_path):
    corrections = tmp_path / "fix.csv"
    corrections.write_text("id,action,value\nb,drop,\nc,answer,3\nd,choices,\"['하나', '둘']\"\n", encoding="utf-8")
    items = [item("a"), item("b", question="b?"), item("c", question="c?"), item("d", question="d?")]
    cleaned, report = clean(items, steps=[], corrections_path=corrections)
    by_id = {i.id: i for i in cleaned}
    assert set(by_id) == {"a", "c", "d"}
    assert by_id["c"].answer == 3 and by_id["d"].choices == ("하나", "둘")
    assert report.dropped_ids == ["b"]


def test_correction_for_unknown_id_is_an_error(tmp_path):
    corrections = tmp_path / "fix.csv"
    corrections.write_text("id,action,value\nzzz,drop,\n", encoding="utf-8")
    with pytest.raises(DataValidationError, match="zzz"):
        clean([item("a")], steps=[], corrections_path=corrections)


def test_two_corrections_for_one_id_are_refused_with_the_row(tmp_path):
    corrections = tmp_path / "fix.csv"
    corrections.write_text("id,action,value\na,answer,2\na,drop,\n", encoding="utf-8")
    with pytest.raises(DataValidationError, match=r"fix\.csv, row 2, id 'a', column 'id': a second correction"):
        clean([item("a")], steps=[], corrections_path=corrections)


def test_corrections_keep_their_reason_and_source_for_reports(tmp_path):
    corrections = tmp_path / "fix.csv"
    corrections.write_text("id,action,value,reason,source\na,answer,2,key says 2,review\n", encoding="utf-8")
    [fix] = load_corrections(corrections)
    assert (fix.reason, fix.source) == ("key says 2", "review")
    assert describe_corrections([item("a")], [fix]) == ["a answer 1 -> 2: key says 2"]


def test_unknown_step_name_is_rejected():
    with pytest.raises(ValueError, match="unknown cleaning step"):
        clean([item()], steps=["normalise"])
