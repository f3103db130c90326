"""Answer extraction from generated text: strict JSON, lenient JSON, Korean answer patterns, then fallback."""

from __future__ import annotations

import pytest

from suneung_lit.reasoning.extraction import extract_answer

CASES = [
    ('{"reasoning": "지문 둘째 문단에 따르면 ...", "answer": 3}', 5, 3, "json"),
    ('{"answer": "2", "reasoning": "보기 ㄱ과 ㄴ이 옳다"}', 4, 2, "json"),
    ('```json\n{"reasoning": "근거는 셋째 문단", "answer": 4}\n```', 5, 4, "lenient_json"),
    ("{'reasoning': '작은따옴표 JSON', 'answer': 1,}", 5, 1, "lenient_json"),
    (
        '풀이: 지문에서 {중괄호} 표현이 나온다. 결과 {"answer": 5, "reasoning": "마지막 선택지"} 입니다.',
        5,
        5,
        "lenient_json",
    ),
    ('{"reasoning": "1번과 2번은 틀리고 답은 3번, "answer": 3', 5, 3, "lenient_json"),
    ("지문을 보면 1번은 틀렸고, 2번도 근거가 없다. 따라서 정답은 4번입니다.", 5, 4, "pattern"),
    ("정답: ③", 5, 3, "pattern"),
    ("정답은 ５번", 5, 5, "pattern"),
    ("The answer is 2.", 4, 2, "pattern"),
    ("답 → (1)", 4, 1, "pattern"),
    ("정답은 7번입니다. 아니, 다시 보니 정답은 2번.", 5, 2, "pattern"),
    ('{"answer": 9}', 5, None, "fallback"),
    ("지문의 내용이 어렵다. 1990년대에 3개의 학설이 있었다.", 5, None, "fallback"),
    ("", 5, None, "fallback"),
]


@pytest.mark.parametrize(("text", "num_choices", "answer", "path"), CASES)
def test_extraction_finds_the_answer_and_says_how(text, num_choices, answer, path):
    result = extract_answer(text, num_choices)
    assert (result.answer, result.path) == (answer, path)
