"""Answering a batch: scoring and generation give the same per-item record, debiased copies fold back to items."""

from __future__ import annotations

import pytest
import torch

from suneung_lit.answering import GeneratedAnswers, ScoredAnswers
from suneung_lit.backbone import BaseSettings, LoraSettings
from suneung_lit.data.datamodule import MultipleChoiceDataModule
from suneung_lit.data.records import write_items
from suneung_lit.data.synthetic import make_items
from suneung_lit.data.tokenization import option_token_ids
from suneung_lit.debias import PositionOffsets
from suneung_lit.module import QLoRAMultipleChoice


@pytest.fixture()
def model(tiny_model_dir):
    module = QLoRAMultipleChoice(
        str(tiny_model_dir), base=BaseSettings(quantization="none", dtype="float32"), lora=LoraSettings(dropout=0.0)
    )
    module.configure_model()
    return module.model.eval()


def first_batch(model_dir, tmp_path, debias: str) -> dict:
    write_items(make_items(6, seed=9, prefix="q"), tmp_path / "items.csv")
    data = MultipleChoiceDataModule(
        str(model_dir), predict_path=str(tmp_path / "items.csv"), max_length=256, eval_batch_size=64, debias=debias
    )
    data.setup("predict")
    return next(iter(data.predict_dataloader())), data.tokenizer


def test_cyclic_copies_come_back_as_one_row_per_item_with_the_original_answers(tiny_model_dir, tmp_path, model):
    batch, tokenizer = first_batch(tiny_model_dir, tmp_path, "cyclic")
    answerer = ScoredAnswers(option_token_ids(tokenizer, 5), "cyclic", PositionOffsets())
    answerer.start("predict")
    with torch.no_grad():
        answers = answerer(model, batch)
    unshifted = batch["shift"] == 0
    assert sorted(answers.id) == sorted(batch["id"][i] for i in unshifted.nonzero().flatten().tolist())
    assert answers.answer.tolist() == [int(batch["answer"][batch["item_index"] == i][0]) for i in answers.index]
    assert len(answers.row_scores) == len(batch["id"]) > len(answers.id)  # every copy was scored
    # The six items have 4, 5, 5, 4, 5 and 5 choices: 28 shifted copies, 4.67 per item.
    assert len(batch["id"]) == 28 and len(answers.id) == 6
    lines, _ = answerer.finish()
    assert "4.67 scored copies per item" in lines[0]


def test_scored_and_generated_answers_give_the_writer_the_same_columns(tiny_model_dir, tmp_path, model):
    batch, tokenizer = first_batch(tiny_model_dir, tmp_path, "none")
    option_ids = option_token_ids(tokenizer, 5)
    with torch.no_grad():
        scored = ScoredAnswers(option_ids, "none", PositionOffsets())(model, batch).prediction_record()
        generated = GeneratedAnswers(tokenizer, option_ids, "", max_new_tokens=3)(model, batch).prediction_record()
    assert set(generated) - set(scored) == {"text", "path"} and set(scored) <= set(generated)
    for record in (scored, generated):
        assert record["id"] == list(batch["id"])
        assert torch.allclose(record["probabilities"].sum(-1), torch.ones(len(batch["id"])), atol=1e-4)
        assert ((record["prediction"] >= 1) & (record["prediction"] <= record["num_choices"])).all()


def test_test_and_predict_with_offsets_need_fitted_offsets():
    answerer = ScoredAnswers([1, 2, 3, 4, 5], "offsets", PositionOffsets())
    answerer.start("val")  # validation is where they are fitted
    with pytest.raises(ValueError, match="predict needs a checkpoint"):
        answerer.start("predict")
    ScoredAnswers([1, 2, 3, 4, 5], "offsets", PositionOffsets({4: torch.zeros(4)})).start("predict")
