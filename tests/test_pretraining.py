"""Continued pretraining: corpora checked before the model loads (naming file and line), packed blocks that lose no
token, the language-model stage through the CLI on the tiny model, and a fine-tune that starts from its adapter."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from safetensors.torch import load_file

from suneung_lit.backbone import LoraSettings
from suneung_lit.cli import main
from suneung_lit.data.records import load_items
from suneung_lit.pretraining.corpus import CorpusError, build_corpus, read_corpus
from suneung_lit.pretraining.datamodule import RightPadCollator, chunk_passages, pack_blocks, split_passages

from .conftest import COMPETITION_DATA, KLUE_READING, REPO, needs_competition, quick_learner, run_in_process

SAMPLE_TRAIN = REPO / "data" / "sample_train.csv"


# --- corpora --------------------------------------------------------------------------------------------------


def test_each_corpus_format_reads_every_passage_in_order(tmp_path):
    (tmp_path / "a.jsonl").write_text('{"text": "첫 문단"}\n\n{"text": "둘째 문단", "id": 2}\n', encoding="utf-8")
    (tmp_path / "b.csv").write_text('id,text\n1,"여러 줄\n문단"\n2,셋째\n', encoding="utf-8")
    folder = tmp_path / "txt"
    (folder / "sub").mkdir(parents=True)
    (folder / "2.txt").write_text("나중\n", encoding="utf-8")
    (folder / "sub" / "1.txt").write_text("하위 폴더\n", encoding="utf-8")
    assert [p.text for p in read_corpus(tmp_path / "a.jsonl")] == ["첫 문단", "둘째 문단"]
    assert [(p.text, p.where.rsplit(":", 1)[1]) for p in read_corpus(tmp_path / "b.csv")] == [
        ("여러 줄\n문단", "3"),
        ("셋째", "4"),
    ]
    assert [p.text for p in read_corpus(folder)] == ["나중", "하위 폴더"]


@pytest.mark.parametrize(
    "name, content, complaint",
    [
        ("c.jsonl", b'{"text": "ok"}\n{"text": \n', "c.jsonl:2: not a JSON object"),
        ("c.jsonl", b'{"text": "ok"}\n{"body": "x"}\n', "c.jsonl:2: no 'text' field"),
        ("c.jsonl", b'{"text": "ok"}\n{"text": "  "}\n', "c.jsonl:2: 'text' is empty"),
        ("c.jsonl", b'{"text": 3}\n', "c.jsonl:1: 'text' is int, not text"),
        ("c.jsonl", b'{"text": "ok"}\n{"text": "\xff\xfe"}\n', "c.jsonl:2: not valid UTF-8"),
        ("c.jsonl", b"\n\n", "c.jsonl: empty corpus file"),
        ("c.csv", b"id,body\n1,x\n", "c.csv:1: no 'text' column (columns: id, body)"),
        ("c.csv", b"id,text\n1,ok\n2,\n", "c.csv:3: 'text' is empty"),
        ("c.csv", b"id,text\n", "c.csv: a header and no rows"),
        ("c.txt", b"  \n", "c.txt: empty text file"),
        ("c.txt", b"ok\n\x80", "c.txt:2: not valid UTF-8"),
        ("c.parquet", b"PAR1", "a corpus is .jsonl, .csv, .txt or a folder"),
    ],
)
def test_a_bad_corpus_is_refused_naming_file_and_line(tmp_path, name, content, complaint):
    (tmp_path / name).write_bytes(content)
    with pytest.raises(CorpusError) as refused:
        read_corpus(tmp_path / name)
    assert complaint in str(refused.value)


def test_a_folder_without_text_files_and_a_missing_path_are_refused(tmp_path):
    with pytest.raises(CorpusError, match="needs .txt files"):
        read_corpus(tmp_path)
    with pytest.raises(CorpusError, match="no such corpus file or folder"):
        read_corpus(tmp_path / "missing.jsonl")
    with pytest.raises(CorpusError, match="no corpus"):
        build_corpus()


def test_paragraphs_of_multiple_choice_files_join_once_and_held_out_paragraphs_stay_out():
    items = load_items(KLUE_READING)
    corpus = build_corpus(items_paths=[KLUE_READING, KLUE_READING])
    unique = {item.paragraph for item in items}
    assert len(corpus.passages) == len(unique) and corpus.duplicates == len(unique)
    with pytest.raises(CorpusError, match=f"no passages left: {len(unique)} read, {len(unique)} in excluded files"):
        build_corpus(items_paths=[KLUE_READING], exclude_paths=[KLUE_READING])


@needs_competition("train.csv", "test.csv")
def test_the_competition_passages_are_counted_once_and_validation_paragraphs_never_reach_the_corpus(tmp_path):
    from suneung_lit.data.records import Item, write_items
    from suneung_lit.data.splitting import grouped_split, paragraph_key

    train = load_items(COMPETITION_DATA / "train.csv")
    part, val = grouped_split(train, 0.1, 42)
    write_items(part, tmp_path / "part.csv")
    write_items(val, tmp_path / "val.csv")
    corpus = build_corpus(items_paths=[COMPETITION_DATA / "train.csv", COMPETITION_DATA / "test.csv"],
                          exclude_paths=[tmp_path / "val.csv"])  # fmt: skip
    keys = [paragraph_key(Item("", p.text, "", ())) for p in corpus.passages]
    assert len(set(keys)) == len(keys), "each passage once"
    assert not set(keys) & {paragraph_key(item) for item in val}, "no validation paragraph"
    assert {paragraph_key(item) for item in part} <= set(keys), "every training paragraph"
    assert corpus.held_out > 0


# --- blocks ---------------------------------------------------------------------------------------------------


@settings(max_examples=200, deadline=None)
@given(st.lists(st.lists(st.integers(0, 9), min_size=1, max_size=40), min_size=1, max_size=12), st.integers(2, 16))
def test_packing_and_chunking_keep_every_token_in_order_within_the_block_size(passages, block_size):
    packed = pack_blocks(passages, block_size)
    assert [t for block in packed for t in block] == [t for p in passages for t in p]
    assert all(len(block) == block_size for block in packed[:-1]) and 0 < len(packed[-1]) <= block_size
    chunks = chunk_passages(passages, block_size)
    assert [t for chunk in chunks for t in chunk] == [t for p in passages for t in p]
    assert all(0 < len(chunk) <= block_size for chunk in chunks)


def test_padding_is_masked_out_of_attention_and_loss():
    batch = RightPadCollator(pad_token_id=0)([{"input_ids": [5, 6, 7]}, {"input_ids": [8]}])
    assert batch["input_ids"].tolist() == [[5, 6, 7], [8, 0, 0]]
    assert batch["attention_mask"].tolist() == [[1, 1, 1], [1, 0, 0]]
    assert batch["labels"].tolist() == [[5, 6, 7], [8, -100, -100]]


def test_validation_passages_are_a_seeded_share_and_at_least_one():
    passages = build_corpus(items_paths=[SAMPLE_TRAIN]).passages
    train, val = split_passages(passages, 0.1, seed=3)
    assert len(val) == max(1, round(len(passages) * 0.1)) and len(train) + len(val) == len(passages)
    assert split_passages(passages, 0.1, seed=3) == (train, val)
    assert split_passages(passages, 0.0, seed=3) == (passages, [])


# --- the stage through the CLI --------------------------------------------------------------------------------


def pretrain_args(tiny_model_dir: Path, tmp_path: Path, *extra: str) -> list[str]:
    return ["pretrain", "--config", "pretrain-demo.yaml", "--model.model_name_or_path", str(tiny_model_dir),
            "--checkpoint.dirpath", str(tmp_path / "ckpt"), "--adapter_export.output_dir", str(tmp_path / "adapter"),
            "--trainer.default_root_dir", str(tmp_path), *extra]  # fmt: skip


def test_a_bad_corpus_stops_the_stage_before_any_model_loads(tmp_path, capsys):
    bad = tmp_path / "corpus.jsonl"
    bad.write_text('{"text": "좋은 문단"}\n{"txt": "오타"}\n', encoding="utf-8")
    argv = ["pretrain", "--config", "pretrain-demo.yaml", "--model.model_name_or_path", str(tmp_path / "no-model"),
            "--data.corpus_paths", json.dumps([str(bad)]), "--data.items_paths", "[]"]  # fmt: skip
    with pytest.raises(SystemExit) as stopped:
        main(argv)
    assert stopped.value.code == 2
    assert f"{bad}:2: no 'text' field" in capsys.readouterr().err


def test_the_language_model_stage_lowers_its_loss_and_the_fine_tune_starts_from_its_adapter(
    tiny_model_dir, tmp_path, capsys
):
    # Shorter than the demo config's 30 steps of 8 x 128 tokens: the 151k-way head over every token is the cost.
    short = ["--data.block_size", "64", "--data.train_batch_size", "4", "--trainer.max_steps", "12",
             "--trainer.val_check_interval", "4"]  # fmt: skip
    out = run_in_process(pretrain_args(tiny_model_dir, tmp_path, *short), capsys)
    assert "corpus:" in out and "pretrain train:" in out
    [events] = list(tmp_path.glob("lightning_logs/version_*/events.out.tfevents.*"))
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    scalars = EventAccumulator(str(events)).Reload()
    losses = [e.value for e in scalars.Scalars("train/loss")]
    val = [e.value for e in scalars.Scalars("val/loss")]
    assert len(val) == 3 and val[-1] < val[0], f"held-out next-token loss should fall: {val}"
    assert losses[-1] < losses[0]
    adapter = tmp_path / "adapter"
    saved = load_file(adapter / "adapter_model.safetensors")

    # The multiple-choice module with init_adapter starts from exactly these weights.
    module = quick_learner(tiny_model_dir)
    module.hparams.init_adapter = str(adapter)
    module.configure_model()
    current = {k.replace(".default", ""): v for k, v in module.model.named_parameters() if "lora_" in k}
    assert len(current) == len(saved)
    for key, value in saved.items():
        assert torch.equal(current["base_model.model." + key.removeprefix("base_model.model.")].cpu(), value), key
    fresh = quick_learner(tiny_model_dir)
    fresh.configure_model()
    fresh_b = [v for k, v in fresh.model.named_parameters() if "lora_B" in k]
    assert all(float(v.abs().max()) == 0 for v in fresh_b), "fresh LoRA B starts at zero; the loaded one does not"
    assert any(float(v.abs().max()) > 0 for k, v in saved.items() if "lora_B" in k)

    # Through the CLI: fit from the adapter runs and says where it started.
    out = run_in_process(["fit", "--config", "demo.yaml", "--model.model_name_or_path", str(tiny_model_dir),
                          "--model.init_adapter", str(adapter), "--trainer.max_steps", "2",
                          "--trainer.val_check_interval", "2", "--trainer.default_root_dir", str(tmp_path / "fit"),
                          "--checkpoint.dirpath", str(tmp_path / "fit" / "ckpt"),
                          "--adapter_export.output_dir", str(tmp_path / "fit" / "adapter")], capsys)  # fmt: skip
    assert f"LoRA tensors from {adapter}" in out


def test_an_adapter_of_another_shape_is_refused_naming_the_setting(tiny_model_dir, tmp_path, capsys):
    run_in_process(pretrain_args(tiny_model_dir, tmp_path, "--trainer.max_steps", "1", "--data.val_fraction", "0"),
                   capsys)  # fmt: skip
    module = quick_learner(tiny_model_dir)
    module.lora = LoraSettings(r=4, dropout=0.0)
    module.hparams.init_adapter = str(tmp_path / "adapter")
    with pytest.raises(ValueError, match="lora.r 8 there, 4 here"):
        module.configure_model()
    module = quick_learner(tiny_model_dir)
    module.lora = LoraSettings(dropout=0.0, top_layers=1)
    module.hparams.init_adapter = str(tmp_path / "adapter")
    with pytest.raises(ValueError, match="have no place in this model"):
        module.configure_model()
    module = quick_learner(tiny_model_dir)
    module.hparams.init_adapter = str(tmp_path)
    with pytest.raises(FileNotFoundError, match="no adapter_config.json"):
        module.configure_model()
