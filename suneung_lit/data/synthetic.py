"""Synthetic items whose answer can only be found by reading the paragraph, for the demo and tests.

Each paragraph is a short Korean passage that ends by stating the answer number; the question and choices
carry no hint. A model that has learned to read the paragraph reaches full accuracy; one that has not stays at
chance (1/4 to 1/5). Answers are spread evenly over every position.
"""

from __future__ import annotations

import random

from suneung_lit.data.records import Item

TOPICS = ("바다", "도서관", "기차", "시장", "학교", "정원", "박물관", "등산", "요리", "음악회", "우체국", "축제")
OPENINGS = (
    "{topic}에 다녀온 학생이 짧은 글을 남겼다.",
    "다음은 {topic}에 관한 어느 신문 기사의 일부이다.",
    "{topic}을 주제로 한 수업에서 학생들이 토론을 하였다.",
    "할머니께서는 젊은 시절 {topic}에서 있었던 일을 들려주셨다.",
)
CLOSINGS = ("선생님은 이 문제의 정답이 {answer}번이라고 말씀하셨다.", "글쓴이는 정답이 {answer}번이라고 밝혔다.")
QUESTIONS = ("윗글을 읽고 알맞은 답을 고르시오.", "윗글의 내용으로 적절한 것은?", "다음 중 정답은?")
WORDS = ("사과", "연필", "구름", "다리", "바람", "거울", "우산", "시계", "나무", "편지", "모자", "의자", "창문", "달력")


def make_items(count: int, seed: int = 0, prefix: str = "synthetic", with_answers: bool = True) -> list[Item]:
    rng = random.Random(seed)
    items = []
    seen = {4: 0, 5: 0}
    for n in range(count):
        num_choices = 5 if n % 3 else 4
        # Cycle through the positions separately for 4- and 5-choice items, so every answer is equally common.
        answer = seen[num_choices] % num_choices + 1
        seen[num_choices] += 1
        topic = rng.choice(TOPICS)
        paragraph = " ".join([rng.choice(OPENINGS).format(topic=topic), rng.choice(CLOSINGS).format(answer=answer)])
        items.append(
            Item(
                id=f"{prefix}-{n:04d}",
                paragraph=paragraph,
                question=rng.choice(QUESTIONS),
                choices=tuple(rng.sample(WORDS, num_choices)),
                answer=answer if with_answers else None,
            )
        )
    return items
