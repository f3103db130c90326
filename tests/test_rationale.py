"""Rationale training and self-generated rationales: reasoning before the answer, loss on the assistant turn."""

from __future__ import annotations

import json
from dataclasses import replace

import torch

from suneung_lit.backbone import BaseSettings, LoraSettings
from suneung_lit.data.datamodule import MultipleChoiceDataModule
from suneung_lit.data.prompts import load_template, render_prompt
from suneung_lit.data.records import Item, load_items, write_items
from suneung_lit.module import QLoRAMultipleChoice
from suneung_lit.reasoning.rationale import rationale_loss
from suneung_lit.reasoning.star import main as star_main
from suneung_lit.reasoning.star import reasoning_of, select_rationales

ITEM = Item("r1", "세종은 훈민정음을 창제하였다.", "훈민정음을 만든 왕은?", ("태조", "세종", "성종", "영조"), 2)
REASONED = replace(ITEM, metadata={"reasoning": '지문 첫 문장에 "세종"이 나온다.'})


def test_the_reasoning_is_written_out_before_the_answer_digit(tokenizer):
    template = load_template("cot_reasoning")
    reasoned = render_prompt(REASONED, template, tokenizer)
    assert reasoned.endswith('{"reasoning": "지문 첫 문장에 \\"세종\\"이 나온다.", "answer": ')
    assert render_prompt(ITEM, template, tokenizer).endswith('{"reasoning": "", "answer": ')
    assert render_prompt(ITEM, template, tokenizer, for_generation=True).endswith('assistant\n{"reasoning": "')


def test_rationale_loss_equals_causal_lm_loss_on_the_assistant_turn(tiny_model_dir, tmp_path):
    write_items([REASONED, replace(ITEM, id="r2", question="훈민정음 창제를 명한 왕은?")], tmp_path / "train.csv")
    write_items([replace(ITEM, id="v1", paragraph="다른 지문")], tmp_path / "val.csv")
    datamodule = MultipleChoiceDataModule(
        str(tiny_model_dir),
        train_path=str(tmp_path / "train.csv"),
        val_path=str(tmp_path / "val.csv"),
        template="cot_reasoning",
        max_length=512,
        train_batch_size=2,
    )
    datamodule.setup("fit")
    module = QLoRAMultipleChoice(
        str(tiny_model_dir), base=BaseSettings(compute_dtype="float32", dtype="float32"), lora=LoraSettings(dropout=0.0)
    )
    module.configure_model()
    module.option_ids = [16, 17, 18, 19, 20]
    batch = next(iter(datamodule.train_dataloader()))
    lengths = batch["reasoning_length"].tolist()
    assert sorted(lengths)[0] == 0 and sorted(lengths)[1] > 10  # only the item with a reasoning column
    ours, _, _ = rationale_loss(
        module.model, batch, module.option_ids, lambda logits, scores: module._loss(logits, scores, batch)
    )
    # Reference: causal-LM loss over prompt + answer with everything but the assistant turn and the digit masked.
    row = lengths.index(max(lengths))
    keep = batch["attention_mask"][row].bool()
    prompt = batch["input_ids"][row, keep]
    full = torch.cat([prompt, batch["labels"][row : row + 1]])[None]
    labels = torch.full_like(full, -100)
    labels[0, -(lengths[row] + 1) :] = full[0, -(lengths[row] + 1) :]
    other = 1 - row
    other_prompt = batch["input_ids"][other, batch["attention_mask"][other].bool()]
    other_full = torch.cat([other_prompt, batch["labels"][other : other + 1]])[None]
    other_labels = torch.full_like(other_full, -100)
    other_labels[0, -1] = other_full[0, -1]
    with torch.no_grad():
        a = module.model(input_ids=full, labels=labels).loss * (lengths[row] + 1)
        b = module.model(input_ids=other_full, labels=other_labels).loss
    torch.testing.assert_close(ours, (a + b) / (lengths[row] + 2), rtol=1e-4, atol=1e-4)


def test_star_keeps_only_rationales_that_reached_the_gold_answer(tmp_path):
    items = [replace(ITEM, id=f"q{n}") for n in range(4)]
    generated = [
        {"id": "q0", "text": '{"reasoning": "지문에 세종이 나온다.", "answer": 2}', "answer": 2, "path": "json"},
        {"id": "q1", "text": '{"reasoning": "태조가 나라를 세웠다.", "answer": 1}', "answer": 1, "path": "json"},
        {"id": "q2", "text": "정답은 2번", "answer": 2, "path": "pattern"},  # right, but no reasoning to keep
        {"id": "q3", "text": "...", "answer": 2, "path": "fallback"},
    ]
    selected, report = select_rationales(items, generated)
    assert [i.metadata["reasoning"] for i in selected] == ["지문에 세종이 나온다.", "", "", ""]
    assert (report.kept, report.wrong, report.unparsed) == (1, 1, 2)
    assert reasoning_of('text {"reasoning": "근거", "answer": 3} more') == "근거"


def test_star_command_writes_every_item_with_a_reasoning_column(tmp_path, capsys):
    write_items([replace(ITEM, id="q0"), replace(ITEM, id="q1")], tmp_path / "train.csv")
    record = {"id": "q0", "text": '{"reasoning": "지문 첫 문장에 근거한다.", "answer": 2}', "answer": 2, "path": "json"}
    (tmp_path / "reasoning.jsonl").write_text(json.dumps(record, ensure_ascii=False) + "\n", encoding="utf-8")
    assert (
        star_main([str(tmp_path / "train.csv"), str(tmp_path / "reasoning.jsonl"), "--output", str(tmp_path / "o.csv")])
        == 0
    )
    assert "1 of 2 items got a kept rationale" in capsys.readouterr().out
    written = load_items(tmp_path / "o.csv")
    assert [i.metadata["reasoning"] for i in written] == ["지문 첫 문장에 근거한다.", ""]
