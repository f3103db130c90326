"""``python -m suneung_lit.data generate PASSAGES --model M --output DIR``: a language model writes one
multiple-choice item per passage, and each item passes, in order, five filters:

1. ``schema``: a JSON object with a question, exactly ``--num-choices`` distinct non-empty choices, an answer in
   range (and a <보기> with ``--bogi``);
2. ``validator``: a second prompt asks the judge whether the keyed answer follows from the passage, the question is
   about it and the distractors are plausible; P(YES) against NO, read from the two tokens' logits, must reach
   ``--validator-threshold``;
3. ``answerable``: the judge, reading the passage, picks the keyed answer under at least ``--min-shifts-correct``
   of the item's cyclic shifts (default: all of them);
4. ``blind``: without the passage, the judge picks it under at most ``--blind-max`` of the shifts (a share), so the
   item needs its passage;
5. ``overlap``: no paragraph or question+choices near-duplicate of an item of ``--test`` (``data overlap``'s test).

Every passage ends up in exactly one of ``items.jsonl`` (accepted, flat schema with ``source``, ``generated_by``
and ``passage_id``) and ``rejects.jsonl`` (the filter that stopped it, why, and the writer's text). Both are
appended a record at a time and flushed to disk, so a run killed at any point (kill -9 included) continues where it
stopped when started again: passages already recorded are skipped and a half-written last line is dropped.
``summary.json`` counts the outcome per filter, the accepted items per keyed position, and items per hour.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from suneung_lit.atomic_write import write_atomically
from suneung_lit.data.matching import find_overlap
from suneung_lit.data.records import Item, jsonl_lines, load_items
from suneung_lit.itemgen.candidates import (
    TEMPLATES,
    Rejected,
    parse_candidate,
    validator_prompt,
    writer_examples,
    writer_prompt,
)
from suneung_lit.itemgen.endpoint import EndpointError, EndpointWriter
from suneung_lit.pretraining.corpus import CorpusError, Passage, read_corpus

FILTERS = ("schema", "validator", "answerable", "blind", "overlap")


@dataclass(frozen=True)
class Filters:
    """The thresholds of the filters after ``schema`` (see the module docstring)."""

    validator_threshold: float = 0.5
    min_shifts_correct: int | None = None  # None: every shift
    blind_max: float = 0.5
    overlap_threshold: float = 0.8


def judge(
    candidates: Sequence[Item],
    judge_model,
    filters: Filters,
    test_items: Sequence[Item] = (),
    validate_template: str | None = None,
) -> dict:
    """Each candidate's fate, by id: ``None`` when it passes every filter, else ``Rejected``. A candidate stops at
    the first filter it fails; later filters only score the survivors. ``validate_template``: the validator's
    prompt (default ``templates/validate.txt``)."""
    fate: dict[str, Rejected | None] = {}
    alive = list(candidates)
    if alive:
        template = validate_template or (TEMPLATES / "validate.txt").read_text(encoding="utf-8")
        verdicts = judge_model.yes_probability([validator_prompt(item, template) for item in alive])
        for item, p_yes in zip(alive, verdicts, strict=True):
            if p_yes < filters.validator_threshold:
                fate[item.id] = Rejected("validator", f"P(YES) {p_yes:.3f} < {filters.validator_threshold}")
        alive = [item for item in alive if item.id not in fate]
    if alive:
        for item, correct in zip(alive, judge_model.correct_under_shifts(alive), strict=True):
            needed = item.num_choices if filters.min_shifts_correct is None else filters.min_shifts_correct
            if correct < needed:
                fate[item.id] = Rejected("answerable", f"keyed answer picked under {correct} of {item.num_choices} "
                                                       f"shifts with the passage, {needed} needed")  # fmt: skip
        alive = [item for item in alive if item.id not in fate]
    if alive:
        for item, correct in zip(alive, judge_model.correct_under_shifts(alive, blind=True), strict=True):
            if correct / item.num_choices > filters.blind_max:
                fate[item.id] = Rejected("blind", f"keyed answer picked under {correct} of {item.num_choices} "
                                                  f"shifts without the passage (> {filters.blind_max})")  # fmt: skip
        alive = [item for item in alive if item.id not in fate]
    if alive and test_items:
        for hit in find_overlap(test_items, alive, filters.overlap_threshold):
            # find_overlap(train, test): here the candidates are the "test" side being checked against the file.
            fate.setdefault(hit.test_id, Rejected("overlap", f"{hit.field} {hit.similarity} like test item "
                                                              f"{hit.train_id}"))  # fmt: skip
    for item in candidates:
        fate.setdefault(item.id, None)
    return fate


class Outputs:
    """``items.jsonl`` and ``rejects.jsonl`` in ``folder``, appended one flushed record at a time; opening them
    drops a half-written last line (a killed run) and reports the passages already recorded."""

    def __init__(self, folder: Path):
        folder.mkdir(parents=True, exist_ok=True)
        self.items_path, self.rejects_path = folder / "items.jsonl", folder / "rejects.jsonl"
        self.done: set[str] = set()
        self.counts: Counter = Counter()
        # Accepted items per keyed position: writers favour some positions, and items keyed at one position teach it.
        self.keys: Counter = Counter()
        for path, kind in ((self.items_path, "accepted"), (self.rejects_path, None)):
            for record in _complete_records(path):
                self.done.add(record["passage_id"])
                self.counts[kind or record["filter"]] += 1
                if kind:
                    self.keys[int(record["answer"])] += 1

    def accept(self, item: Item) -> None:
        record = {"id": item.id, "paragraph": item.paragraph, "question": item.question,
                  "choices": list(item.choices), "answer": item.answer, "question_plus": item.question_plus,
                  **item.metadata}  # fmt: skip
        self._append(self.items_path, record, item.metadata["passage_id"], "accepted")
        self.keys[item.answer] += 1

    def reject(self, passage: Passage, rejected: Rejected, text: str) -> None:
        record = {"passage_id": passage.id, "filter": rejected.filter, "reason": rejected.reason, "text": text}
        self._append(self.rejects_path, record, passage.id, rejected.filter)

    def _append(self, path: Path, record: dict, passage_id: str, kind: str) -> None:
        with open(path, "a", encoding="utf-8") as handle:
            handle.write(json.dumps(record, ensure_ascii=False) + "\n")
            handle.flush()
            os.fsync(handle.fileno())
        self.done.add(passage_id)
        self.counts[kind] += 1


def _complete_records(path: Path) -> list[dict]:
    """The records of a JSON Lines output, after cutting a last line that a kill left without its newline."""
    if not path.exists():
        return []
    raw = path.read_bytes()
    if raw and not raw.endswith(b"\n"):
        cut = raw.rfind(b"\n") + 1
        with open(path, "r+b") as handle:
            handle.truncate(cut)
        print(f"{path}: dropped a half-written last record ({len(raw) - cut} bytes) left by a stopped run",
              file=sys.stderr)  # fmt: skip
        raw = raw[:cut]
    return [json.loads(line) for line in jsonl_lines(raw.decode("utf-8")) if line.strip()]


def read_passages(path: Path, text_field: str) -> list[Passage]:
    """The passages, with ids unique (resuming finds passages by id)."""
    passages = read_corpus(path, text_field)
    seen: dict[str, str] = {}
    for passage in passages:
        if passage.id in seen:
            raise CorpusError(f"{passage.where}: passage id {passage.id!r} again (first at {seen[passage.id]}); "
                              "ids must be unique so a stopped run can resume")  # fmt: skip
        seen[passage.id] = passage.where
    return passages


def generate(
    passages: Sequence[Passage],
    writer,
    judge_model,
    outputs: Outputs,
    generated_by: str,
    num_choices: int = 5,
    with_bogi: bool = False,
    filters: Filters = Filters(),
    test_items: Sequence[Item] = (),
    batch_size: int = 4,
    max_new_tokens: int = 512,
    temperature: float = 0.0,
    examples: Mapping[str, Sequence[Item]] | None = None,
    write_template: str | None = None,
    validate_template: str | None = None,
) -> None:
    """Write, check and record an item for each passage not yet recorded, ``batch_size`` passages at a time.
    ``examples``: solved items shown to the writer, by passage id (``writer_examples``); the templates default to
    the package's ``templates/write.txt`` and ``validate.txt``."""
    template = write_template or (TEMPLATES / "write.txt").read_text(encoding="utf-8")
    if examples and "{examples}" not in template:
        raise ValueError("the writer's template has no {examples} field: the examples asked for would not be shown")
    examples = examples or {}
    todo = [p for p in passages if p.id not in outputs.done]
    for start in range(0, len(todo), batch_size):
        batch = todo[start : start + batch_size]
        prompts = [writer_prompt(p, num_choices, with_bogi, template, examples.get(p.id, ())) for p in batch]
        texts = writer.write(prompts, max_new_tokens, temperature)
        parsed = [
            parse_candidate(t, p, num_choices, with_bogi, generated_by) for t, p in zip(texts, batch, strict=True)
        ]
        fate = judge([c for c in parsed if isinstance(c, Item)], judge_model, filters, test_items, validate_template)
        for passage, text, candidate in zip(batch, texts, parsed, strict=True):
            verdict = candidate if isinstance(candidate, Rejected) else fate[candidate.id]
            if verdict is None:
                outputs.accept(candidate)
            else:
                outputs.reject(passage, verdict, text)
        print(f"generate: {len(outputs.done)} of {len(passages)} passages recorded "
              f"({outputs.counts['accepted']} accepted)", file=sys.stderr, flush=True)  # fmt: skip


def write_summary(folder: Path, outputs: Outputs, passages: int, seconds: float, recorded: int) -> dict:
    accepted = outputs.counts["accepted"]
    summary = {
        "passages": passages,
        "accepted": accepted,
        "rejected": {name: outputs.counts[name] for name in FILTERS},
        "accepted_by_key": {str(position): outputs.keys[position] for position in sorted(outputs.keys)},
        "this_run": {"passages": recorded, "seconds": round(seconds, 1),
                     "passages_per_hour": round(recorded / seconds * 3600, 1) if seconds > 0 else None},
    }  # fmt: skip
    write_atomically(folder / "summary.json", json.dumps(summary, ensure_ascii=False, indent=2) + "\n")
    return summary


def load_model(name: str, quantization: str, dtype: str, batch_size: int):
    """A causal LM the package loads as in training (4-bit on a GPU by default), for writing and judging."""
    import torch
    from transformers import AutoTokenizer

    from suneung_lit.backbone import BaseSettings, load_base_model
    from suneung_lit.itemgen.judging import LanguageModel
    from suneung_lit.precision import resolve_dtype, this_machine

    machine = this_machine("auto")
    dtype, reason = resolve_dtype(dtype, machine)
    if quantization == "auto":
        quantization = "nf4" if torch.cuda.is_available() else "none"
    print(f"generate: {name} ({quantization}, {dtype}: {reason})", file=sys.stderr)
    model = load_base_model(name, None, BaseSettings(quantization=quantization, dtype=dtype, compute_dtype=dtype))
    if quantization == "none" and torch.cuda.is_available():
        model = model.to("cuda")  # quantized weights are placed while loading; an unquantized model is moved
    tokenizer = AutoTokenizer.from_pretrained(name)
    tokenizer.padding_side = "left"
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    return LanguageModel(model, tokenizer, batch_size)


def endpoint_writer(args: argparse.Namespace) -> EndpointWriter:
    key = os.environ.get(args.api_key_env)
    if not key:
        print(f"generate: ${args.api_key_env} is not set: requests to {args.endpoint} go without a key",
              file=sys.stderr)  # fmt: skip
    print(f"generate: writer {args.model} at {args.endpoint}, {args.endpoint_workers} requests at once",
          file=sys.stderr)  # fmt: skip
    return EndpointWriter(args.endpoint, args.model, key, workers=args.endpoint_workers, seed=args.seed)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("passages", type=Path, help=".jsonl/.csv with a text field (and optional id), or .txt files")
    parser.add_argument(
        "--model",
        required=True,
        help="the writer: a local model folder or a hub name, or the endpoint's model with --endpoint",
    )
    parser.add_argument(
        "--endpoint",
        help="an OpenAI-compatible API root (e.g. http://localhost:8000/v1) that writes "
        "the items; the filters still need a local --judge",
    )
    parser.add_argument(
        "--api-key-env",
        default="OPENAI_API_KEY",
        help="the environment variable holding the endpoint's key (never an argument)",
    )
    parser.add_argument("--endpoint-workers", type=int, default=8, help="requests in flight at once")
    parser.add_argument("--output", required=True, type=Path, help="folder for items.jsonl, rejects.jsonl, summary")
    parser.add_argument("--judge", help="the model that validates and scores the items (default: the writer)")
    parser.add_argument("--num-choices", type=int, default=5, choices=[4, 5])
    parser.add_argument("--bogi", action="store_true", help="ask for a <보기> (question_plus) in every item")
    parser.add_argument("--text-field", default="text")
    parser.add_argument("--test", type=Path, help="items no generated item may overlap (e.g. the test file)")
    parser.add_argument(
        "--examples",
        type=Path,
        help="labelled items (e.g. the train file) shown to the writer as solved examples before its passage",
    )
    parser.add_argument("--num-examples", type=int, default=1, help="examples per passage (with --examples)")
    parser.add_argument(
        "--example-selection",
        default="bm25",
        choices=["random", "bm25"],
        help="the examples most like the passage (bm25) or drawn at random (seeded by --seed)",
    )
    parser.add_argument("--write-template", type=Path, help="the writer's prompt (default: templates/write.txt)")
    parser.add_argument("--validate-template", type=Path, help="the validator's prompt (default: validate.txt)")
    parser.add_argument("--validator-threshold", type=float, default=0.5)
    parser.add_argument("--min-shifts-correct", type=int, help="default: every shift")
    parser.add_argument("--blind-max", type=float, default=0.5, help="share of shifts answered without the passage")
    parser.add_argument("--overlap-threshold", type=float, default=0.8)
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--max-new-tokens", type=int, default=512)
    parser.add_argument("--temperature", type=float, default=0.0, help="0: greedy")
    parser.add_argument("--seed", type=int, default=0, help="for sampling (--temperature > 0)")
    parser.add_argument("--limit", type=int, help="the first N passages only")
    parser.add_argument("--quantization", default="auto", choices=["auto", "nf4", "none"])
    parser.add_argument("--dtype", default="auto", choices=["auto", "bfloat16", "float16", "float32"])


def command(args: argparse.Namespace) -> int:
    if args.endpoint and not args.judge:
        print("error: --endpoint writes the items, but the filters read a local model's logits: name one with --judge",
              file=sys.stderr)  # fmt: skip
        return 2
    try:
        passages = read_passages(args.passages, args.text_field)[: args.limit]
        test_items = load_items(args.test) if args.test else []
        write_template, validate_template = (
            path.read_text(encoding="utf-8") if path else None for path in (args.write_template, args.validate_template)
        )
        if args.examples and "{examples}" not in (write_template or "{examples}"):
            raise ValueError(f"{args.write_template}: no {{examples}} field, so --examples would not be shown")
        examples = None
        if args.examples:
            examples = writer_examples(passages, load_items(args.examples), args.num_examples, args.num_choices,
                                       args.bogi, args.example_selection, args.seed)  # fmt: skip
    except (CorpusError, ValueError, OSError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    import torch

    torch.manual_seed(args.seed)
    outputs = Outputs(args.output)
    if args.endpoint:
        writer = endpoint_writer(args)
    else:
        writer = load_model(args.model, args.quantization, args.dtype, args.batch_size)
    judge_model = writer if not args.judge else load_model(args.judge, args.quantization, args.dtype, args.batch_size)
    filters = Filters(args.validator_threshold, args.min_shifts_correct, args.blind_max, args.overlap_threshold)
    name = args.model if args.endpoint else Path(args.model).name or args.model
    started, before, failure = time.perf_counter(), len(outputs.done), None
    try:
        generate(passages, writer, judge_model, outputs, name, args.num_choices, args.bogi, filters, test_items,
                 args.batch_size, args.max_new_tokens, args.temperature, examples, write_template,
                 validate_template)  # fmt: skip
    except EndpointError as err:
        failure = err  # the failed batch recorded nothing: running the same command again asks for it anew
    summary = write_summary(args.output, outputs, len(passages), time.perf_counter() - started,
                            len(outputs.done) - before)  # fmt: skip
    if failure:
        print(f"error: {failure}\n(every passage recorded so far is kept; the same command resumes)", file=sys.stderr)
        return 2
    print(json.dumps(summary, ensure_ascii=False))
    return 0
