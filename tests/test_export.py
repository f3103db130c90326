"""The lm-eval export: our prompts as an lm-evaluation-harness task, and that harness agreeing with our scoring."""

from __future__ import annotations

import json
from dataclasses import replace

import lightning as L
import pytest

from suneung_lit.backbone import BaseSettings
from suneung_lit.cli import AdapterExport
from suneung_lit.data.datamodule import MultipleChoiceDataModule
from suneung_lit.data.records import write_items
from suneung_lit.data.synthetic import make_items
from suneung_lit.export.__main__ import main as export
from suneung_lit.module import QLoRAMultipleChoice
from suneung_lit.optimization import OptimizationSettings

from .conftest import KLUE_READING

lm_eval = pytest.importorskip("lm_eval", reason="the [eval] extra (lm-eval) is not installed")


def test_each_document_is_the_prompt_our_data_module_scores(tiny_model_dir, tmp_path):
    assert export(["lm-eval", str(KLUE_READING), "--output", str(tmp_path), "--model", str(tiny_model_dir)]) == 0
    docs = [json.loads(line) for line in (tmp_path / "suneung_lit_klue_reading.jsonl").open(encoding="utf-8")]
    data = MultipleChoiceDataModule(str(tiny_model_dir), test_path=str(KLUE_READING), max_length=2048)
    data.setup("test")
    encoded = data.encoded["test"]
    assert [doc["id"] for doc in docs] == encoded["id"]
    for doc, row in zip(docs, encoded, strict=True):
        assert data.tokenizer.encode(doc["context"], add_special_tokens=False) == row["input_ids"]
        assert doc["choices"] == [str(n) for n in range(1, row["num_choices"] + 1)] and doc["target"] == row["answer"]
    config = (tmp_path / "suneung_lit_klue_reading.yaml").read_text(encoding="utf-8")
    assert 'target_delimiter: ""' in config and str((tmp_path / "suneung_lit_klue_reading.jsonl").resolve()) in config


def test_unlabelled_items_are_refused_with_their_ids(tiny_model_dir, tmp_path, capsys):
    items = make_items(3, seed=1)
    write_items(items[:2] + [replace(items[2], answer=None)], tmp_path / "x.csv")
    assert (
        export(["lm-eval", str(tmp_path / "x.csv"), "--output", str(tmp_path / "out"), "--model", str(tiny_model_dir)])
        == 2
    )
    assert items[2].id in capsys.readouterr().err and not (tmp_path / "out").exists()


def choices(outputs: list[dict]) -> dict[str, int]:
    """0-based predicted position per id, from ``Trainer.predict`` outputs."""
    return {i: int(p) - 1 for batch in outputs for i, p in zip(batch["id"], batch["prediction"], strict=True)}


def quiet_trainer(**settings) -> L.Trainer:
    return L.Trainer(accelerator="cpu", logger=False, enable_progress_bar=False, enable_model_summary=False, **settings)


def test_lm_eval_reproduces_our_choices_item_for_item_with_an_exported_adapter(tiny_model_dir, tmp_path):
    """Our predict (plain scoring) and lm-eval's ``hf`` model with ``peft=`` on the exported task: same accuracy,
    same choice on every item. The adapter is trained a few steps first, so that it changes the answers."""
    write_items(make_items(24, seed=3), tmp_path / "train.csv")
    settings = dict(
        base=BaseSettings(quantization="none", dtype="float32", compute_dtype="float32"),
        optimization=OptimizationSettings(learning_rate=0.05),
    )
    module = QLoRAMultipleChoice(str(tiny_model_dir), **settings)
    train = MultipleChoiceDataModule(str(tiny_model_dir), train_path=str(tmp_path / "train.csv"), max_length=512)
    trainer = quiet_trainer(max_steps=4, limit_val_batches=0, callbacks=[AdapterExport(str(tmp_path / "adapter"))])
    trainer.fit(module, train)
    heldout = MultipleChoiceDataModule(str(tiny_model_dir), predict_path=str(KLUE_READING), max_length=2048)
    ours = choices(quiet_trainer().predict(module, heldout))
    validated = MultipleChoiceDataModule(str(tiny_model_dir), val_path=str(KLUE_READING), max_length=2048)
    [metrics] = quiet_trainer().validate(module, validated)

    export(["lm-eval", str(KLUE_READING), "--output", str(tmp_path / "task"), "--model", str(tiny_model_dir)])
    results = lm_eval.simple_evaluate(
        model="hf",
        model_args=f"pretrained={tiny_model_dir},peft={tmp_path / 'adapter'},dtype=float32",
        tasks=["suneung_lit_klue_reading"],
        task_manager=lm_eval.tasks.TaskManager(include_path=str(tmp_path / "task")),
        device="cpu",
        batch_size=4,
        log_samples=True,
    )
    samples = results["samples"]["suneung_lit_klue_reading"]
    theirs = {
        s["doc"]["id"]: max(range(len(s["filtered_resps"])), key=lambda k: s["filtered_resps"][k][0]) for s in samples
    }
    assert theirs == ours
    gold = {s["doc"]["id"]: s["doc"]["target"] for s in samples}
    accuracy = sum(ours[i] == gold[i] for i in gold) / len(gold)
    assert results["results"]["suneung_lit_klue_reading"]["acc,none"] == pytest.approx(accuracy)
    assert metrics["val/acc"] == pytest.approx(accuracy)
    base = choices(quiet_trainer().predict(QLoRAMultipleChoice(str(tiny_model_dir), **settings), heldout))
    assert base != ours  # the adapter changed answers, so lm-eval really loaded it
