"""Self-generated rationales (STaR): keep the model's own reasoning where it reached the gold answer.

No external LLM is reachable, so rationales come from the model being trained:

    # 1. generate on the training items with the current model (reasoning first, then the answer)
    python -m suneung_lit predict --config CONFIG --ckpt_path CKPT --data.predict_path data/train.csv \\
        --data.template cot_reasoning --model.answer_mode generate --prediction_writer.output_dir star/
    # 2. keep the texts whose extracted answer equals the gold answer; write a data file with a reasoning column
    python -m suneung_lit.reasoning star data/train.csv star/reasoning.jsonl --output data/train_star.csv

The kept items train on reasoning + answer (see the data module's ``reasoning`` column). Items are never dropped
from the output: those without a kept rationale keep an empty ``reasoning`` and train answer-only.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections import Counter
from dataclasses import dataclass, replace
from pathlib import Path

from suneung_lit.data.records import DataValidationError, Item, Problem, jsonl_lines, load_items, write_items
from suneung_lit.reasoning.extraction import json_objects

MIN_REASONING_CHARS = 10


@dataclass(frozen=True)
class StarReport:
    items: int
    generated: int
    kept: int
    wrong: int
    unparsed: int  # no answer in the text (fallback) or no usable reasoning

    def __str__(self) -> str:
        return (
            f"{self.kept} of {self.items} items got a kept rationale ({self.generated} generated: "
            f"{self.wrong} reached a wrong answer, {self.unparsed} had no parsable answer or reasoning)"
        )


def reasoning_of(text: str) -> str:
    """The ``reasoning`` field of the generated JSON object, or the text before any JSON when there is none."""
    for span in json_objects(text):
        try:
            value = json.loads(span).get("reasoning")
        except (ValueError, AttributeError):
            continue
        if isinstance(value, str) and value.strip():
            return value.strip()
    return ""


def select_rationales(items: list[Item], generated: list[dict]) -> tuple[list[Item], StarReport]:
    """Items with a ``reasoning`` metadata value where the generated answer was right (empty elsewhere)."""
    by_id = {record["id"]: record for record in generated}
    outcomes: Counter = Counter()
    result = []
    for item in items:
        record = by_id.get(item.id)
        reasoning = ""
        if record is None:
            outcomes["missing"] += 1
        elif record.get("path") == "fallback" or len(reasoning_of(record.get("text", ""))) < MIN_REASONING_CHARS:
            outcomes["unparsed"] += 1
        elif int(record.get("answer", 0)) != item.answer:
            outcomes["wrong"] += 1
        else:
            reasoning = reasoning_of(record["text"])
            outcomes["kept"] += 1
        result.append(replace(item, metadata={**item.metadata, "reasoning": reasoning}))
    report = StarReport(
        len(items), len(items) - outcomes["missing"], outcomes["kept"], outcomes["wrong"], outcomes["unparsed"]
    )
    return result, report


def read_generated(path: Path) -> list[dict]:
    records = []
    for number, line in enumerate(jsonl_lines(path.read_text(encoding="utf-8")), start=1):
        if not line.strip():
            continue
        try:
            records.append(json.loads(line))
        except ValueError as err:
            raise DataValidationError([Problem(str(path), number, None, None, f"not valid JSON: {err}")]) from err
    return records


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m suneung_lit.reasoning star", description=__doc__.split("\n\n")[0])
    parser.add_argument("data", type=Path, help="the labelled items that were generated on")
    parser.add_argument("generated", type=Path, help="reasoning.jsonl from predict with answer_mode generate")
    parser.add_argument("--output", type=Path, required=True)
    args = parser.parse_args(argv)
    try:
        items = load_items(args.data)
        unlabelled = [item.id for item in items if item.answer is None]
        if unlabelled:
            raise DataValidationError(
                [Problem(str(args.data), None, i, "answer", "STaR needs gold answers") for i in unlabelled[:20]],
                len(unlabelled),
            )
        selected, report = select_rationales(items, read_generated(args.generated))
    except DataValidationError as err:
        print(err, file=sys.stderr)
        return 2
    write_items(selected, args.output)
    print(f"{report}; wrote {args.output}")
    return 0
