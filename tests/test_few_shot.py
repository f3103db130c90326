"""Few-shot examples: K solved items before each item, chosen by rule, rendered as turns, dropped before the paragraph
is shortened, recorded per item, and scored alike with and without shared prefixes."""

from __future__ import annotations

import csv
import re
from dataclasses import replace

import lightning as L
import pytest
import torch

from suneung_lit.backbone import BaseSettings
from suneung_lit.data.datamodule import MultipleChoiceDataModule
from suneung_lit.data.few_shot import example_ids, examples_of, with_examples, without_last_example
from suneung_lit.data.prompts import load_template
from suneung_lit.data.records import write_items
from suneung_lit.data.synthetic import make_items
from suneung_lit.data.tokenization import encode_items
from suneung_lit.module import QLoRAMultipleChoice

from .conftest import real_items, run_in_process


def test_random_examples_are_never_the_item_nor_its_paragraph_and_repeat_for_a_seed():
    pool = make_items(12, seed=1, prefix="pool")
    # pool-0003 is asked about the item's own paragraph: the same group, so it must never be an example.
    item = make_items(1, seed=2, prefix="item")[0]
    pool[3] = replace(pool[3], paragraph=item.paragraph)
    pool.append(item)
    (chosen,) = with_examples([item], pool, 3, "random", seed=7)
    ids = example_ids(chosen)
    assert len(ids) == 3 and item.id not in ids and "pool-0003" not in ids
    assert example_ids(with_examples([item], pool, 3, "random", seed=7)[0]) == ids
    assert {tuple(example_ids(with_examples([item], pool, 3, "random", seed=s)[0])) for s in range(6)} != {tuple(ids)}


def test_bm25_examples_are_the_pool_items_most_like_the_item():
    items = real_items()  # the 19 KLUE reading items: real Korean paragraphs
    item, pool = items[0], items[1:]
    near = replace(pool[5], id="near", paragraph=item.paragraph[: len(item.paragraph) // 2] + " 다른 결말.")
    (chosen,) = with_examples([item], [*pool, near], 2, "bm25", seed=0)
    assert example_ids(chosen)[0] == "near"
    assert [e.answer for e in examples_of(chosen)] == [near.answer, examples_of(chosen)[1].answer]


def test_examples_render_as_earlier_turns_each_answered_by_its_digit():
    pool = make_items(4, seed=3, prefix="pool")
    (item,) = with_examples(make_items(1, seed=4, prefix="item"), pool, 2, "random", seed=0)
    turns = load_template("base").messages(item)
    assert [t["role"] for t in turns] == ["user", "assistant", "user", "assistant", "user"]
    examples = examples_of(item)
    assert [turns[1]["content"], turns[3]["content"]] == [str(e.answer) for e in examples]
    assert examples[0].paragraph in turns[0]["content"] and item.paragraph in turns[4]["content"]


def test_a_long_prompt_drops_examples_before_its_own_paragraph_is_shortened(tokenizer, tmp_path):
    template = load_template("base")
    pool = make_items(6, seed=5, prefix="pool")
    (item,) = with_examples(make_items(1, seed=6, prefix="item"), pool, 3, "random", seed=0)
    examples = examples_of(item)

    def length(kept: int) -> int:
        fewer = replace(item, metadata={}) if kept == 0 else item
        while len(examples_of(fewer)) > kept:
            fewer = without_last_example(fewer)
        return encode_items([fewer], tokenizer, template, 100_000, 5, tmp_path / f"c{kept}")["length"][0]

    assert length(0) < length(1) < length(2) < length(3)
    # A budget that one example fits and two do not: the first (most similar) example stays, the paragraph whole.
    encoded = encode_items([item], tokenizer, template, length(1) + 2, 5, tmp_path / "fit")
    text = tokenizer.decode(encoded["input_ids"][0])
    assert item.paragraph in text and examples[0].paragraph in text
    assert not any(e.paragraph in text for e in examples[1:])


def predict(model_dir, tmp_path, shared: bool):
    datamodule = MultipleChoiceDataModule(
        str(model_dir), train_path=str(tmp_path / "train.csv"), predict_path=str(tmp_path / "predict.csv"),
        max_length=2048, eval_batch_size=4, cache_dir=str(tmp_path / f"cache-{shared}"), debias="cyclic",
        shift_prefix_reuse=shared, few_shot=2, few_shot_selection="bm25",
    )  # fmt: skip
    module = QLoRAMultipleChoice(
        str(model_dir), base=BaseSettings(quantization="none", dtype="float32"), debias="cyclic"
    )
    trainer = L.Trainer(accelerator="cpu", logger=False, enable_progress_bar=False, enable_model_summary=False)
    outputs = trainer.predict(module, datamodule=datamodule)
    return {i: p for b in outputs for i, p in zip(b["id"], b["probabilities"], strict=True)}, datamodule


def test_cyclic_debiasing_over_few_shot_prompts_gives_the_same_probabilities_from_shared_prefixes(
    tiny_model_dir, tmp_path
):
    items = real_items()
    write_items(items[:12], tmp_path / "train.csv")
    write_items(items[12:16], tmp_path / "predict.csv")
    shared, datamodule = predict(tiny_model_dir, tmp_path, True)
    plain, _ = predict(tiny_model_dir, tmp_path, False)
    chosen = datamodule.few_shot_ids["predict"]
    assert set(chosen) == {item.id for item in items[12:16]} and all(len(ids) == 2 for ids in chosen.values())
    assert not {i for ids in chosen.values() for i in ids} & set(chosen)  # no predict item is an example
    for item_id, probabilities in plain.items():
        torch.testing.assert_close(shared[item_id], probabilities, rtol=0, atol=1e-5)


@pytest.mark.slow
def test_predict_with_few_shot_writes_every_id_and_each_items_examples(tiny_model_dir, tmp_path, capsys):
    write_items(make_items(30, seed=8, prefix="train"), tmp_path / "train.csv")
    write_items(make_items(5, seed=9, prefix="predict"), tmp_path / "predict.csv")
    run_in_process(
        [
            "predict",
            "--config",
            "demo.yaml",
            "--model.model_name_or_path",
            str(tiny_model_dir),
            "--data.train_path",
            str(tmp_path / "train.csv"),
            "--data.predict_path",
            str(tmp_path / "predict.csv"),
            "--data.few_shot",
            "3",
            "--prediction_writer.output_dir",
            str(tmp_path / "predictions"),
            "--trainer.default_root_dir",
            str(tmp_path),
            "--trainer.enable_progress_bar",
            "false",
        ],  # fmt: skip
        capsys,
    )
    with open(tmp_path / "predictions" / "few_shot.csv", encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle))
    with open(tmp_path / "predictions" / "predictions.csv", encoding="utf-8") as handle:
        predicted = [row["id"] for row in csv.DictReader(handle)]
    assert [row["id"] for row in rows] == predicted == [f"predict-{n:04d}" for n in range(5)]
    assert all(len(row["examples"].split()) == 3 and row["examples"].startswith("train-") for row in rows)


def test_check_counts_the_examples_in_each_prompt_and_what_max_length_would_cut(tiny_model_dir, tmp_path, capsys):
    from suneung_lit.data.__main__ import main as data_main

    write_items(make_items(8, seed=10, prefix="pool"), tmp_path / "pool.csv")
    write_items(make_items(4, seed=11, prefix="item"), tmp_path / "items.csv")
    common = ["check", str(tmp_path / "items.csv"), "--tokenizer", str(tiny_model_dir)]

    def median(output: str) -> int:
        return int(re.search(r"median (\d+)", output).group(1))

    assert data_main(common) == 0
    alone = median(capsys.readouterr().out)
    assert data_main([*common, "--few-shot", "2", "--few-shot-from", str(tmp_path / "pool.csv")]) == 0
    out = capsys.readouterr().out
    assert "2 examples (random)" in out and median(out) > 2.5 * alone
    assert data_main([*common, "--few-shot", "2", "--few-shot-from", str(tmp_path / "pool.csv"),
                      "--max-length", str(2 * alone)]) == 0  # fmt: skip
    cut = re.search(r"examples dropped or paragraph shortened to fit \d+: (\d+)", capsys.readouterr().out)
    assert cut and int(cut.group(1)) == 4
    assert data_main([*common, "--few-shot", "2"]) == 2  # no pool named


def test_dense_examples_are_the_pool_items_nearest_by_the_encoders_embeddings(tmp_path):
    from .test_retrieval import build_tiny_encoder

    items = real_items()
    item, pool = items[0], items[1:]
    # Nearly the item's own text, but another paragraph group (its last words cut): eligible, and the nearest.
    near = replace(pool[5], id="near", paragraph=item.paragraph[:-10], question=item.question + " 다른")
    encoder = build_tiny_encoder(tmp_path, [f"{i.paragraph} {i.question}" for i in items])
    (chosen,) = with_examples([item], [*pool, near], 2, "dense", seed=0, encoder=str(encoder))
    assert example_ids(chosen)[0] == "near" and item.id not in example_ids(chosen)
    with pytest.raises(ValueError, match="few_shot_encoder"):
        with_examples([item], pool, 2, "dense", seed=0)


def test_dense_selection_without_an_encoder_fails_before_the_model_loads(tiny_model_dir, tmp_path):
    from suneung_lit.data.records import DataValidationError

    write_items(make_items(3, seed=12, prefix="p"), tmp_path / "predict.csv")
    datamodule = MultipleChoiceDataModule(
        str(tiny_model_dir), predict_path=str(tmp_path / "predict.csv"), train_path=str(tmp_path / "predict.csv"),
        few_shot=2, few_shot_selection="dense",
    )  # fmt: skip
    with pytest.raises(DataValidationError, match="data.few_shot_encoder"):
        datamodule.check_inputs("predict")
