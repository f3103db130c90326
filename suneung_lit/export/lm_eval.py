"""A task folder for EleutherAI's lm-evaluation-harness that scores our items exactly as ``validate`` does.

Each document's context is the prompt our data module renders for the item (chat template or plain text, cleaned
and shortened as we score it), ending where the answer digit goes; the choices are the option digits "1".."n"
and the target is the gold position. lm-eval's ``acc`` compares the log-likelihood of each digit after the
context: the same option logits at the same position that our plain (``debias: none``) scoring reads, so the two
agree item for item. Run it with

    lm_eval --model hf --model_args pretrained=BASE[,peft=ADAPTER] --include_path DIR --tasks NAME
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

from suneung_lit.atomic_write import write_atomically
from suneung_lit.data.prompts import PromptTemplate
from suneung_lit.data.records import Item
from suneung_lit.data.tokenization import fitted_prompt


def documents(items: Sequence[Item], template: PromptTemplate, tokenizer, max_length: int) -> list[dict]:
    """One lm-eval document per item: ``id``, ``context`` (our prompt), ``choices`` ("1".."n"), ``target`` (0-based)."""
    return [
        {
            "id": item.id,
            "context": fitted_prompt(item, template, tokenizer, max_length),
            "choices": [str(n) for n in range(1, item.num_choices + 1)],
            "target": item.answer - 1,
        }
        for item in items
    ]


def task_yaml(task: str, data_file: Path) -> str:
    """The task definition: a local JSONL read with the ``json`` dataset builder, zero-shot, accuracy.

    ``target_delimiter`` is empty because the digit follows our prompt directly (lm-eval puts a space there by
    default); the data file is named by its absolute path, which lm-eval needs whatever folder it runs from.
    """
    return "\n".join(
        [
            f"task: {task}",
            "dataset_path: json",
            "dataset_kwargs:",
            "  data_files:",
            f"    test: {json.dumps(str(data_file.resolve()))}",
            "test_split: test",
            "output_type: multiple_choice",
            "doc_to_text: context",
            "doc_to_choice: choices",
            "doc_to_target: target",
            'target_delimiter: ""',
            "num_fewshot: 0",
            "metric_list:",
            "  - metric: acc",
            "    aggregation: mean",
            "    higher_is_better: true",
            "metadata:",
            "  version: 1.0",
            "",
        ]
    )


def write_task(docs: Sequence[dict], output: Path, task: str) -> tuple[Path, Path]:
    """Write ``TASK.jsonl`` and ``TASK.yaml`` under ``output``; each file appears whole or not at all."""
    output.mkdir(parents=True, exist_ok=True)
    data_file, config = output / f"{task}.jsonl", output / f"{task}.yaml"
    lines = "".join(json.dumps(doc, ensure_ascii=False) + "\n" for doc in docs)
    write_atomically(data_file, lines)
    write_atomically(config, task_yaml(task, data_file))
    return data_file, config
