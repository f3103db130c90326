"""Prefix reuse: items sharing a paragraph compute the shared prompt prefix once, with unchanged probabilities."""

from __future__ import annotations

from collections import Counter
from types import SimpleNamespace

import lightning as L
import pytest
import torch

from suneung_lit.backbone import BaseSettings
from suneung_lit.data.datamodule import MultipleChoiceDataModule
from suneung_lit.data.prefixes import common_prefix_length, prefix_groups, tokens_not_recomputed
from suneung_lit.data.records import write_items
from suneung_lit.module import QLoRAMultipleChoice
from suneung_lit.prefix_reuse import check_layout, packed_mask
from suneung_lit.scoring import answer_logits, batch_answer_logits

from .conftest import FIXTURES, REAL_TEXT, real_items


def test_common_prefix_leaves_every_sequence_a_token_of_its_own():
    assert common_prefix_length([[1, 2, 3, 4], [1, 2, 3, 9]]) == 3
    assert common_prefix_length([[1, 2, 3], [1, 2, 3]]) == 2
    assert common_prefix_length([[5, 1], [6, 1]]) == 0


def test_groups_need_the_same_key_and_enough_shared_tokens():
    ids = [[7] * 80 + [1], [7] * 80 + [2], [7] * 10 + [3], [7] * 80 + [4]]
    group, shared = prefix_groups(ids, ["a", "a", "b", "c"], min_shared=64)
    assert group == [0, 0, -1, -1] and shared == [80, 80, 0, 0]
    group, _ = prefix_groups(ids, ["a", "b", "a", "c"], min_shared=64)  # only 10 tokens shared
    assert group == [-1, -1, -1, -1]


def test_each_group_saves_its_prefix_once_per_row_beyond_the_first():
    assert tokens_not_recomputed([0, 0, 0, -1, 1, 1], [80, 80, 80, 0, 30, 30]) == 2 * 80 + 30


def sharing_items(source: str, count_groups: int, singles: int):
    """Real items: a few paragraphs asked about more than once, plus single items."""
    items = real_items(source)
    counts = Counter(item.paragraph for item in items)
    shared = sorted({i.paragraph for i in items if counts[i.paragraph] > 1}, key=len)[:count_groups]
    chosen = [i for i in items if i.paragraph in shared]
    return chosen + [i for i in items if counts[i.paragraph] == 1][:singles]


def predict(
    model_dir,
    path,
    tmp_path,
    prefix_reuse: bool,
    shift_prefix_reuse: bool = True,
    quantization="none",
    debias="none",
    layout="cached",
):
    """Float32 predict of ``path``: each item's option probabilities by id, and the prefix groups scored."""
    base = BaseSettings(quantization=quantization, dtype="float32", compute_dtype="float32")
    module = QLoRAMultipleChoice(str(model_dir), base=base, debias=debias, prefix_layout=layout)
    datamodule = MultipleChoiceDataModule(
        str(model_dir),
        predict_path=str(path),
        max_length=2048,
        eval_batch_size=4,
        cache_dir=str(tmp_path / "cache"),
        prefix_reuse=prefix_reuse,
        shift_prefix_reuse=shift_prefix_reuse,
        debias=debias,
    )
    trainer = L.Trainer(accelerator="cpu", logger=False, enable_progress_bar=False, enable_model_summary=False)
    outputs = trainer.predict(module, datamodule=datamodule)
    rows = {i: p for batch in outputs for i, p in zip(batch["id"], batch["probabilities"], strict=True)}
    encoded = datamodule.encoded["predict"]
    groups = encoded["prefix_group"] if "prefix_group" in encoded.column_names else []
    return rows, groups


@pytest.mark.parametrize("source", REAL_TEXT)
@pytest.mark.parametrize("quantization", ["none", "nf4"])
@pytest.mark.parametrize("layout", ["cached", "packed"])
def test_prefix_reuse_gives_the_plain_probabilities_on_real_shared_paragraphs(
    tiny_model_dir, tmp_path, quantization, source, layout
):
    write_items(sharing_items(source, 3, 4), tmp_path / "items.csv")
    plain, _ = predict(tiny_model_dir, tmp_path / "items.csv", tmp_path, False, quantization=quantization)
    reused, groups = predict(
        tiny_model_dir, tmp_path / "items.csv", tmp_path, True, quantization=quantization, layout=layout
    )
    assert len(set(groups) - {-1}) == 3 and sum(g >= 0 for g in groups) >= 6
    assert plain.keys() == reused.keys()
    for item_id, probabilities in plain.items():
        torch.testing.assert_close(reused[item_id], probabilities, rtol=0, atol=1e-5)


@pytest.mark.slow
@pytest.mark.parametrize("source", REAL_TEXT)
def test_prefix_reuse_matches_plain_scores_on_gemma_past_its_sliding_window(gemma_dir, tmp_path, source):
    items = real_items(source)
    counts = Counter(item.paragraph for item in items)
    long_shared = next(p for p in sorted(counts, key=len) if counts[p] > 1 and len(p) > 900)
    write_items([i for i in items if i.paragraph == long_shared], tmp_path / "items.csv")
    plain, _ = predict(gemma_dir, tmp_path / "items.csv", tmp_path, False)
    reused, groups = predict(gemma_dir, tmp_path / "items.csv", tmp_path, True)
    assert groups and all(g == 0 for g in groups)
    for item_id, probabilities in plain.items():
        torch.testing.assert_close(reused[item_id], probabilities, rtol=0, atol=1e-4)


@pytest.mark.parametrize("debias", ["cyclic", "pride"])
@pytest.mark.parametrize("paragraphs", [False, True], ids=["copies", "copies+paragraphs"])
@pytest.mark.parametrize("layout", ["cached", "packed"])
def test_shifted_copies_scored_from_their_shared_prefix_give_the_plain_debiased_probabilities(
    tiny_model_dir, tmp_path, debias, paragraphs, layout
):
    write_items(sharing_items("klue", 3, 4), tmp_path / "items.csv")
    plain, no_groups = predict(tiny_model_dir, tmp_path / "items.csv", tmp_path, False, False, debias=debias)
    shared, groups = predict(
        tiny_model_dir, tmp_path / "items.csv", tmp_path, paragraphs, True, debias=debias, layout=layout
    )
    assert not no_groups and len(set(groups) - {-1}) >= (3 if paragraphs else 1)
    assert plain.keys() == shared.keys()
    for item_id, probabilities in plain.items():
        torch.testing.assert_close(shared[item_id], probabilities, rtol=0, atol=1e-5)


@pytest.mark.parametrize(
    ("layout", "attention", "passes"),
    [("cached", "sdpa", 2), ("packed", "sdpa", 1), ("packed", "eager", 1)],
    ids=["cached: prefixes, then suffixes", "packed, sdpa booleans", "packed, eager additive"],
)
def test_a_batch_of_several_groups_scores_in_one_or_two_passes_with_the_plain_logits(
    tiny_model_dir, tmp_path, layout, attention, passes
):
    write_items(sharing_items("klue", 3, 2), tmp_path / "items.csv")
    datamodule = MultipleChoiceDataModule(
        str(tiny_model_dir), predict_path=str(tmp_path / "items.csv"), max_length=2048, eval_batch_size=64,
        cache_dir=str(tmp_path / "cache"), debias="cyclic",
    )  # fmt: skip
    datamodule.setup("predict")
    (batch,) = datamodule.predict_dataloader()
    groups, lengths = batch["prefix_group"], batch["prefix_length"]
    assert bool((groups >= 0).all()) and len(groups.unique()) >= 5 and len(lengths.unique()) >= 5
    base = BaseSettings(quantization="none", dtype="float32", attn_implementation=attention)
    module = QLoRAMultipleChoice(str(tiny_model_dir), base=base)
    module.configure_model()
    assert module.model.config._attn_implementation == attention
    calls = []
    module.model.register_forward_hook(lambda *_: calls.append(1))
    with torch.no_grad():
        shared = batch_answer_logits(module.model, batch, layout)
        assert len(calls) == passes
        plain = answer_logits(module.model, batch["input_ids"], batch["attention_mask"])
    torch.testing.assert_close(shared, plain, rtol=0, atol=1e-4)


def test_a_packed_row_shows_each_suffix_the_prefix_and_itself_only():
    # Segments: 0 the shared prefix, 1 and 2 two suffixes, -1 padding (which sees itself, so no softmax is empty).
    segment = torch.tensor([[0, 0, 1, 1, 2, -1]])
    expected = torch.tensor(
        [
            [1, 0, 0, 0, 0, 0],
            [1, 1, 0, 0, 0, 0],
            [1, 1, 1, 0, 0, 0],
            [1, 1, 1, 1, 0, 0],
            [1, 1, 0, 0, 1, 0],
            [1, 1, 0, 0, 0, 1],
        ],
        dtype=torch.bool,
    )
    assert torch.equal(packed_mask(segment)[0, 0], expected)
    additive = packed_mask(segment, torch.bfloat16)
    assert additive.dtype == torch.bfloat16
    assert torch.equal(additive[0, 0] == 0, expected)
    assert bool((additive[0, 0][~expected] == torch.finfo(torch.bfloat16).min).all())


@pytest.mark.parametrize(
    ("config", "named"),
    [
        (SimpleNamespace(_attn_implementation="flash_attention_2"), "'flash_attention_2'"),
        (SimpleNamespace(_attn_implementation="sdpa", layer_types=["sliding_attention"]), "sliding-window layers"),
    ],
    ids=["flash attention", "Gemma's sliding window"],
)
def test_packed_layout_is_refused_where_the_model_cannot_read_its_mask(config, named):
    model = SimpleNamespace(config=config)
    with pytest.raises(ValueError, match=f"prefix_layout packed.*{named}.*use cached"):
        check_layout(model, "packed")
    check_layout(model, "cached")


def test_validate_with_cyclic_debiasing_reads_the_same_accuracy_and_loss_from_shared_prefixes(tiny_model_dir, tmp_path):
    write_items(sharing_items("klue", 3, 6), tmp_path / "val.csv")
    metrics = []
    for shift_prefix_reuse in (False, True):
        module = QLoRAMultipleChoice(
            str(tiny_model_dir), base=BaseSettings(quantization="none", dtype="float32"), debias="cyclic"
        )
        datamodule = MultipleChoiceDataModule(
            str(tiny_model_dir),
            val_path=str(tmp_path / "val.csv"),
            max_length=2048,
            eval_batch_size=8,
            debias="cyclic",
            shift_prefix_reuse=shift_prefix_reuse,
        )
        trainer = L.Trainer(accelerator="cpu", logger=False, enable_progress_bar=False, enable_model_summary=False)
        metrics.append(trainer.validate(module, datamodule=datamodule)[0])
    assert metrics[0]["val/acc"] == metrics[1]["val/acc"]
    assert metrics[0]["val/loss"] == pytest.approx(metrics[1]["val/loss"], rel=1e-4)  # vocabulary loss ~60 here


def test_shifted_copies_of_items_without_a_paragraph_share_their_question_as_a_prefix(tiny_model_dir, tmp_path):
    """The real CLIcK CSAT items have no paragraph: each item's shifted copies (what the accuracy harness writes)
    form a group of their own on the system prompt and question, with the plain probabilities."""
    from suneung_lit.data.converters import convert
    from suneung_lit.data.shifting import split_shifted_id
    from suneung_lit.evaluation import balanced_copies

    items = convert("click", sorted((FIXTURES / "click_release").rglob("*.json"))).items
    assert len(items) == 6 and not any(item.paragraph.strip() for item in items)
    copies = balanced_copies(items)
    write_items(copies, tmp_path / "copies.csv")
    plain, _ = predict(tiny_model_dir, tmp_path / "copies.csv", tmp_path, False, False)
    reused, groups = predict(tiny_model_dir, tmp_path / "copies.csv", tmp_path, True, False)
    items_of_group = {}
    for copy, group in zip(copies, groups, strict=True):
        items_of_group.setdefault(group, set()).add(split_shifted_id(copy.id)[0])
    items_of_group.pop(-1, None)  # a question too short to be worth a pass of its own (MIN_SHARED_TOKENS)
    assert len(items_of_group) >= 5 and all(len(ids) == 1 for ids in items_of_group.values())
    assert plain.keys() == reused.keys()
    for item_id, probabilities in plain.items():
        torch.testing.assert_close(reused[item_id], probabilities, rtol=0, atol=1e-5)
