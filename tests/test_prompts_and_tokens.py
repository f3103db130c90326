"""Prompts render through the chat template; tokens carry the answer-only target; long items are shortened."""

from __future__ import annotations

import os

import pytest

from suneung_lit.data.prompts import available_templates, load_template, render_prompt
from suneung_lit.data.records import DataValidationError, Item
from suneung_lit.data.shifting import cyclic_shift
from suneung_lit.data.tokenization import IGNORE_INDEX, encode_items, encoding_stats, option_token_ids

FOUR = Item("q4", "조선 후기의 지문이다.", "옳은 것은?", ("가", "나", "다", "라"), 2)
FIVE_WITH_BOGI = Item("q5", "지문", "<보기>를 참고할 때 옳은 것은?", ("가", "나", "다", "라", "마"), 5, "ㄱ. 보기 내용")


def test_bundled_templates_are_all_present():
    assert {"base", "choices_last", "rules_ko", "tutor_en", "cot_json", "support"} <= set(available_templates())


def test_option_tokens_are_qwen_digit_ids(tokenizer):
    assert option_token_ids(tokenizer, 5) == [16, 17, 18, 19, 20]
    assert len(tokenizer) == 151_665


@pytest.mark.parametrize("name", ["base", "choices_last", "rules_ko", "tutor_en", "cot_json"])
def test_instruction_matches_the_item_choice_count(tokenizer, name):
    template = load_template(name)
    four, five = render_prompt(FOUR, template, tokenizer), render_prompt(FIVE_WITH_BOGI, template, tokenizer)
    assert "1, 2, 3, 4" in four and "1, 2, 3, 4, 5" not in four
    assert "1, 2, 3, 4, 5" in five
    assert "4 - 라" in four and "5 - 마" in five
    assert "ㄱ. 보기 내용" in five and "보기" not in four.split("<|im_start|>user")[1].replace("<보기>를", "")


def test_prompt_is_a_user_turn_ending_at_the_answer_position(tokenizer):
    text = render_prompt(FOUR, load_template("base"), tokenizer)
    assert text.startswith("<|im_start|>system\n") and "<|im_start|>user\n지문:\n조선 후기의 지문이다." in text
    assert text.endswith("<|im_start|>assistant\n")


@pytest.mark.parametrize("item", [FOUR, FIVE_WITH_BOGI], ids=["plain", "with_bogi"])
def test_choices_last_leaves_shifted_copies_only_the_choices_and_the_answer_cue_to_compute_apart(tokenizer, item):
    # With debias cyclic every shifted copy recomputes what follows the copies' common prefix: in `base` that is
    # the choices and the closing instruction, in `choices_last` the choices and "정답:" alone.
    def own_part(name: str) -> str:
        template = load_template(name)
        first, second = (render_prompt(cyclic_shift(item, s), template, tokenizer) for s in (0, 1))
        return first[len(os.path.commonprefix([first, second])) :]

    assert "중에 하나를" in own_part("base")
    base_rendered = render_prompt(item, load_template("base"), tokenizer)
    last_rendered = render_prompt(item, load_template("choices_last"), tokenizer)
    assert sorted(base_rendered.replace("\n", "")) == sorted(last_rendered.replace("\n", ""))
    assert own_part("choices_last").startswith(item.choices[0]) and "중에 하나를" not in own_part("choices_last")
    assert own_part("choices_last").endswith("\n\n정답:<|im_end|>\n<|im_start|>assistant\n")


def test_tutor_en_uses_its_own_system_prompt(tokenizer):
    text = render_prompt(FOUR, load_template("tutor_en"), tokenizer)
    assert "Korean College Scholastic Ability Test" in text and "You are Qwen" not in text


def test_cot_json_prefills_the_assistant_turn_so_the_digit_comes_next(tokenizer):
    assert render_prompt(FOUR, load_template("cot_json"), tokenizer).endswith('assistant\n{"answer": ')


def test_support_template_needs_a_support_column():
    template = load_template("support")
    with pytest.raises(DataValidationError, match="support"):
        template.check_items([FOUR], "train.csv")
    supported = Item("s", "지문", "질문?", ("가", "나"), 1, metadata={"support": "관련 사료"})
    template.check_items([supported], "train.csv")


def test_unknown_template_lists_the_choices():
    with pytest.raises(ValueError, match="rules_ko"):
        load_template("nope")


def test_encoded_rows_target_only_the_answer_token(tokenizer, tmp_path):
    dataset = encode_items([FOUR, FIVE_WITH_BOGI], tokenizer, load_template("base"), 512, 5, tmp_path)
    rows = dataset.to_list()
    assert [r["id"] for r in rows] == ["q4", "q5"]
    assert [r["label"] for r in rows] == [17, 20] and [r["answer"] for r in rows] == [1, 4]
    unlabelled = encode_items(
        [Item("u", "지문", "질문?", ("가", "나"))], tokenizer, load_template("base"), 512, 5, tmp_path
    )
    assert unlabelled[0]["label"] == IGNORE_INDEX and unlabelled[0]["answer"] == -1


def test_long_paragraph_is_shortened_and_counted_never_dropped(tokenizer, tmp_path):
    long_item = Item("long", "아주 긴 지문이다. " * 400, "질문?", ("가", "나", "다", "라"), 3, "보기는 그대로")
    dataset = encode_items([long_item, FOUR], tokenizer, load_template("base"), 300, 5, tmp_path)
    stats = encoding_stats(dataset)
    assert stats.rows == 2 and stats.shortened_ids == ("long",)
    assert max(dataset["length"]) <= 300 and stats.prompt_lengths[0] > 300
    text = tokenizer.decode(dataset[0]["input_ids"])
    assert "보기는 그대로" in text and "4 - 라" in text and "아주 긴 지문이다." in text


def test_item_that_cannot_fit_even_without_paragraph_is_an_error_naming_it(tokenizer, tmp_path):
    huge = Item("huge", "지문", "질문? " * 300, ("가", "나"), 1)
    with pytest.raises(DataValidationError, match="'huge'"):
        encode_items([huge], tokenizer, load_template("base"), 128, 5, tmp_path)


def test_tokenization_is_cached_by_content(tokenizer, tmp_path):
    first = encode_items([FOUR], tokenizer, load_template("base"), 512, 5, tmp_path)
    assert len(list(tmp_path.iterdir())) == 1
    again = encode_items([FOUR], tokenizer, load_template("base"), 512, 5, tmp_path)
    assert again["input_ids"] == first["input_ids"] and len(list(tmp_path.iterdir())) == 1
    encode_items([FOUR], tokenizer, load_template("rules_ko"), 512, 5, tmp_path)
    assert len(list(tmp_path.iterdir())) == 2
