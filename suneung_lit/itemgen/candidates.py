"""From a writer's text to a candidate item: the prompt it answers, the JSON it returns, and the schema check."""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from suneung_lit.data.few_shot import FewShotSelection, examples_of, with_examples
from suneung_lit.data.records import Item
from suneung_lit.pretraining.corpus import Passage
from suneung_lit.reasoning.extraction import json_objects

TEMPLATES = Path(__file__).resolve().parent / "templates"
BOGI_RULE = '- 문제에 <보기>를 하나 포함하고, 그 내용을 "question_plus"에 쓰세요.\n'


@dataclass(frozen=True)
class Rejected:
    """Why a passage yields no item: the filter that stopped it and what it saw."""

    filter: str  # schema | validator | answerable | blind | overlap
    reason: str


def writer_prompt(
    passage: Passage, num_choices: int, with_bogi: bool, template: str, examples: Sequence[Item] = ()
) -> str:
    """The writer's instruction for one passage (``template``: the text of ``templates/write.txt`` or a user's),
    with ``examples`` (solved items) shown where the template says ``{examples}``."""
    return template.format(
        passage=passage.text,
        num_choices=num_choices,
        bogi_rule=BOGI_RULE if with_bogi else "",
        bogi_field='"question_plus": "<보기> 내용", ' if with_bogi else "",
        examples=example_block(examples, with_bogi),
    )


def example_block(examples: Sequence[Item], with_bogi: bool) -> str:
    """Solved items as the writer should answer them: each one's passage, then its item as the JSON asked for."""
    blocks = []
    for example in examples:
        record = {"question": example.question}
        if with_bogi:
            record["question_plus"] = example.question_plus
        record |= {"choices": list(example.choices), "answer": example.answer}
        blocks.append(f"예시 지문:\n{example.paragraph}\n예시 문제:\n{json.dumps(record, ensure_ascii=False)}\n\n")
    return "".join(blocks)


def writer_examples(
    passages: Sequence[Passage],
    pool: Sequence[Item],
    k: int,
    num_choices: int,
    with_bogi: bool,
    selection: FewShotSelection = "bm25",
    seed: int = 0,
) -> dict[str, list[Item]]:
    """``k`` solved items from ``pool`` per passage id, chosen as few-shot examples are (``data.few_shot``: never
    an item on the same passage). Only items shaped like the ones asked for are shown (``num_choices`` choices, a
    <보기> exactly when ``with_bogi``): a 4-choice example teaches a writer asked for five to write four."""
    shaped = [e for e in pool if e.num_choices == num_choices and bool(e.question_plus.strip()) == with_bogi]
    if len(shaped) < k:
        bogi = "and a <보기>" if with_bogi else "and no <보기>"
        raise ValueError(f"{len(shaped)} labelled items with {num_choices} choices {bogi} to show as examples, "
                         f"{k} asked for")  # fmt: skip
    # A passage is scored for similarity as an item with no question would be.
    queries = [Item(id=p.id, paragraph=p.text, question="", choices=()) for p in passages]
    chosen = with_examples(queries, shaped, k, selection, seed)
    return {passage.id: examples_of(query) for passage, query in zip(passages, chosen, strict=True)}


def parse_candidate(
    text: str, passage: Passage, num_choices: int, with_bogi: bool, generated_by: str
) -> Item | Rejected:
    """The first JSON object in ``text`` as an item on ``passage``, or why it is not one (filter ``schema``): a
    non-empty question, exactly ``num_choices`` distinct non-empty choices, an answer in 1..num_choices, and a
    <보기> when one was asked for."""
    objects = json_objects(text)
    if not objects:
        return Rejected("schema", "no JSON object in the writer's text")
    try:
        record = json.loads(objects[0])
    except json.JSONDecodeError as err:
        return Rejected("schema", f"not valid JSON ({err.msg})")
    if not isinstance(record, dict):
        return Rejected("schema", "the JSON is not an object")
    question, choices, answer = record.get("question"), record.get("choices"), record.get("answer")
    bogi = record.get("question_plus") or ""
    if not isinstance(question, str) or not question.strip():
        return Rejected("schema", "no question")
    if not isinstance(choices, list) or len(choices) != num_choices:
        count = len(choices) if isinstance(choices, list) else "no list of"
        return Rejected("schema", f"{count} choices, {num_choices} asked for")
    if not all(isinstance(c, str) and c.strip() for c in choices):
        return Rejected("schema", "an empty or non-text choice")
    choices = [c.strip() for c in choices]
    if len(set(choices)) != len(choices):
        return Rejected("schema", "two choices are the same")
    # "②".isdigit() is true in Python: only ASCII digits count.
    if isinstance(answer, str) and answer.strip().isascii() and answer.strip().isdigit():
        answer = int(answer.strip())
    if isinstance(answer, bool) or not isinstance(answer, int) or not 1 <= answer <= num_choices:
        return Rejected("schema", f"answer {answer!r} is not a number from 1 to {num_choices}")
    if with_bogi and not (isinstance(bogi, str) and bogi.strip()):
        return Rejected("schema", "no <보기> (question_plus) though one was asked for")
    return Item(
        id=f"gen-{passage.id}",
        paragraph=passage.text,
        question=question.strip(),
        choices=tuple(choices),
        answer=answer,
        question_plus=bogi.strip() if isinstance(bogi, str) else "",
        metadata={"source": "generated", "generated_by": generated_by, "passage_id": passage.id},
    )


def validator_prompt(item: Item, template: str) -> str:
    choices = "\n".join(f"{n}. {choice}" for n, choice in enumerate(item.choices, start=1))
    bogi = f"<보기>\n{item.question_plus}\n" if item.question_plus else ""
    return template.format(passage=item.paragraph, question=item.question, question_plus=bogi, choices=choices,
                           answer=item.answer)  # fmt: skip
