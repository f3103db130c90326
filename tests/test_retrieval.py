"""Offline retrieval: corpus reading, Korean BM25, dense and hybrid search, support columns and RAFT data."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest

from suneung_lit.data.prompts import load_template
from suneung_lit.data.records import Item, load_items, write_items
from suneung_lit.retrieval import dense
from suneung_lit.retrieval.__main__ import main as retrieval_main
from suneung_lit.retrieval.__main__ import unescape
from suneung_lit.retrieval.analysis import kiwi_terms, whitespace_terms
from suneung_lit.retrieval.corpus import CorpusError, Passage, chunk_text, read_passages
from suneung_lit.retrieval.fusion import reciprocal_rank_fusion
from suneung_lit.retrieval.index import RetrievalIndex, RetrievalIndexError, build_index
from suneung_lit.retrieval.raft import build_raft_items
from suneung_lit.retrieval.support import build_query, retrieve_for_items, with_support

from .conftest import competition_marks, real_items

DOCUMENTS = [
    {
        "id": "silhak",
        "title": "실학",
        "text": "조선 후기의 실학자들은 토지 제도의 개혁을 주장하였다. 유형원은 균전론을 내세웠다.",
    },
    {
        "id": "photo",
        "title": "광합성",
        "text": "식물은 엽록체에서 빛 에너지를 이용하여 이산화 탄소와 물로 포도당을 만든다.",
    },
    {"id": "samguk", "title": "삼국", "text": "고구려, 백제, 신라가 한반도에서 경쟁하던 시기를 삼국 시대라고 한다."},
    {
        "id": "gold",
        "title": "금본위제",
        "text": "금본위제에서는 화폐의 가치가 일정한 양의 금에 고정된다. 중앙은행은 금을 보유해야 했다.",
    },
    {
        "id": "tide",
        "title": "조석",
        "text": "달의 인력 때문에 바닷물이 주기적으로 높아지고 낮아지는 현상을 조석이라 한다.",
    },
]


def write_jsonl(path: Path, records: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records), encoding="utf-8")
    return path


def item(item_id: str, question: str, choices: tuple[str, ...], paragraph: str = "지문", **metadata) -> Item:
    return Item(item_id, paragraph, question, choices, 1, "", metadata)


@pytest.fixture(scope="module")
def small_index(tmp_path_factory) -> RetrievalIndex:
    folder = tmp_path_factory.mktemp("index")
    passages, _ = read_passages([write_jsonl(folder / "corpus.jsonl", DOCUMENTS)])
    build_index(passages, folder / "kiwi", progress=False)
    return RetrievalIndex(folder / "kiwi")


def build_tiny_encoder(folder: Path, texts: list[str]) -> Path:
    """A randomly initialised one-layer BERT with a character vocabulary, saved as a sentence-transformers folder."""
    import torch
    from sentence_transformers import SentenceTransformer, models
    from transformers import BertConfig, BertModel, BertTokenizer

    chars = sorted({c for t in texts for c in t if not c.isspace()})
    words = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *chars, *(f"##{c}" for c in chars)]
    tokenizer = BertTokenizer(vocab={w: i for i, w in enumerate(words)}, do_lower_case=False, strip_accents=False)
    torch.manual_seed(0)
    config = BertConfig(
        vocab_size=len(words),
        hidden_size=32,
        num_hidden_layers=1,
        num_attention_heads=2,
        intermediate_size=64,
        max_position_embeddings=256,
    )
    BertModel(config).save_pretrained(folder / "bert")
    tokenizer.save_pretrained(folder / "bert")
    modules = [models.Transformer(str(folder / "bert"), max_seq_length=128), models.Pooling(32, "mean")]
    SentenceTransformer(modules=modules).save(str(folder / "encoder"))
    return folder / "encoder"


@pytest.fixture(scope="module")
def dense_index(tmp_path_factory) -> RetrievalIndex:
    folder = tmp_path_factory.mktemp("dense")
    texts = [f"{d['title']} {d['text']}" for d in DOCUMENTS] + ["토지 개혁 달 바다 금 화폐 식물 빛"]
    encoder = build_tiny_encoder(folder, texts)
    passages, _ = read_passages([write_jsonl(folder / "corpus.jsonl", DOCUMENTS)])
    build_index(passages, folder / "index", dense_model=encoder, progress=False)
    return RetrievalIndex(folder / "index")


# --- corpus ---------------------------------------------------------------------------------------------------


def test_chunks_cover_the_text_overlap_and_never_exceed_the_size():
    text = " ".join(f"단어{n}" for n in range(200))
    windows = chunk_text(text, size=60, overlap=15)
    assert all(len(w) <= 60 for w in windows)
    assert windows[0].startswith("단어0 ") and windows[-1].endswith("단어199")
    for before, after in zip(windows, windows[1:], strict=False):
        assert after[:5] in before  # each window starts inside the previous one
    covered = " ".join(windows)
    assert all(f"단어{n}" in covered for n in range(200))


def test_chunks_end_at_whitespace_rather_than_inside_a_word():
    windows = chunk_text("가나다라 마바사아 자차카타 파하가나", size=12, overlap=2)
    assert windows[0] == "가나다라 마바사아"


@pytest.mark.parametrize("size, overlap", [(0, 0), (10, 10), (10, -1)])
def test_chunking_refuses_impossible_windows(size, overlap):
    with pytest.raises(ValueError, match="overlap"):
        chunk_text("텍스트", size, overlap)


def test_corpus_reads_jsonl_csv_and_txt_folders(tmp_path):
    write_jsonl(tmp_path / "a.jsonl", DOCUMENTS[:2])
    with open(tmp_path / "b.csv", "w", encoding="utf-8", newline="") as file:
        writer = csv.DictWriter(file, fieldnames=["id", "title", "text"])
        writer.writeheader()
        writer.writerow(DOCUMENTS[2])
    (tmp_path / "notes").mkdir()
    (tmp_path / "notes" / "tide.txt").write_text(DOCUMENTS[4]["text"], encoding="utf-8")
    passages, report = read_passages([tmp_path / "a.jsonl", tmp_path / "b.csv", tmp_path / "notes"])
    assert [p.id for p in passages] == ["silhak#0", "photo#0", "samguk#0", "tide#0"]
    assert passages[0].title == "실학" and passages[3].title == "tide"
    assert report.documents == 4 and report.passages == 4


def test_corpus_reports_empty_rows_repeated_ids_and_identical_passages(tmp_path):
    records = [DOCUMENTS[0], {"id": "blank", "text": "   "}, {**DOCUMENTS[1], "id": "silhak"}, DOCUMENTS[0]]
    passages, report = read_passages([write_jsonl(tmp_path / "c.jsonl", records)])
    assert [p.id for p in passages] == ["silhak#0", "silhak~2#0"]
    assert report.empty_rows == ["c.jsonl:blank"] and report.duplicate_passages == 1
    assert any("rows without text" in line for line in report.lines())


def test_a_missing_text_field_names_the_file_line_and_field(tmp_path):
    path = write_jsonl(tmp_path / "c.jsonl", [DOCUMENTS[0], {"id": "x", "body": "본문"}])
    with pytest.raises(CorpusError, match=r"c\.jsonl, line 2: no 'text' field \(found id, body\)"):
        read_passages([path])
    bodies = write_jsonl(tmp_path / "bodies.jsonl", [{"id": "x", "body": "본문"}])
    passages, _ = read_passages([bodies], text_field="body")
    assert [p.doc for p in passages] == ["x"]


def test_unreadable_and_empty_corpora_are_refused_clearly(tmp_path):
    (tmp_path / "latin1.csv").write_bytes("id,text\n1,caf\xe9\n".encode("latin-1"))
    with pytest.raises(CorpusError, match=r"latin1\.csv: not valid UTF-8 at byte"):
        read_passages([tmp_path / "latin1.csv"])
    with pytest.raises(CorpusError, match="holds no text to index"):
        read_passages([write_jsonl(tmp_path / "empty.jsonl", [{"text": ""}])])
    with pytest.raises(CorpusError, match="no such file or folder"):
        read_passages([tmp_path / "missing.jsonl"])
    (tmp_path / "empty_dir").mkdir()
    with pytest.raises(CorpusError, match="holds no .txt files"):
        read_passages([tmp_path / "empty_dir"])
    (tmp_path / "x.parquet").write_bytes(b"PAR1")
    with pytest.raises(CorpusError, match="unsupported corpus file"):
        read_passages([tmp_path / "x.parquet"])


# --- analysis -------------------------------------------------------------------------------------------------


def test_kiwi_keeps_content_morphemes_and_drops_particles_and_endings():
    assert kiwi_terms(["그는 길을 걸어서 토지 개혁을 주장하였다."]) == [["길", "걷", "토지", "개혁", "주장"]]


def test_whitespace_terms_keep_inflected_forms_apart():
    assert whitespace_terms(["개혁을 「주장」 했다."]) == [["개혁을", "주장", "했다"]]


# --- index and search -----------------------------------------------------------------------------------------


def test_bm25_finds_the_passage_whose_words_the_query_inflects_differently(small_index):
    hits = small_index.search(["토지 개혁은 누가 주장했나", "엽록체에서 만들어지는 것은"], k=2)
    assert hits[0][0].passage.doc == "silhak" and hits[1][0].passage.doc == "photo"
    assert hits[0][0].score > 0 and all(h.score > 0 for row in hits for h in row)


def test_kiwi_terms_match_where_whitespace_terms_miss(tmp_path):
    passages, _ = read_passages([write_jsonl(tmp_path / "c.jsonl", DOCUMENTS)])
    build_index(passages, tmp_path / "ws", analyzer="whitespace", progress=False)
    query = ["개혁은 토지를 어떻게"]  # the document says 개혁을 and 토지: no whitespace token in common
    assert RetrievalIndex(tmp_path / "ws").search(query, k=3) == [[]]
    build_index(passages, tmp_path / "kiwi", analyzer="kiwi", progress=False)
    assert RetrievalIndex(tmp_path / "kiwi").search(query, k=3)[0][0].passage.doc == "silhak"


def test_the_saved_index_is_memory_mapped_and_lists_its_build(small_index):
    assert isinstance(small_index.bm25.scores["data"], np.memmap)
    assert isinstance(small_index.passages.offsets, np.memmap)
    assert small_index.manifest["analyzer"] == "kiwi" and small_index.manifest["passages"] == len(DOCUMENTS)
    assert [small_index.passages[n].doc for n in range(len(small_index))] == [d["id"] for d in DOCUMENTS]


def test_an_existing_index_is_replaced_only_when_asked(tmp_path):
    passages = [Passage("a#0", "a", "", "토지 제도")]
    build_index(passages, tmp_path / "index", progress=False)
    with pytest.raises(RetrievalIndexError, match="already exists"):
        build_index(passages, tmp_path / "index", progress=False)
    build_index([Passage("b#0", "b", "", "광합성")], tmp_path / "index", overwrite=True, progress=False)
    assert RetrievalIndex(tmp_path / "index").passages[0].id == "b#0"


def test_overwrite_never_deletes_a_folder_that_is_not_an_index(tmp_path):
    (tmp_path / "notes.txt").write_text("소중한 파일", encoding="utf-8")
    with pytest.raises(RetrievalIndexError, match="is not an index"):
        build_index([Passage("a#0", "a", "", "토지")], tmp_path, overwrite=True, progress=False)
    assert (tmp_path / "notes.txt").is_file()


def test_a_failed_build_leaves_no_folder_behind(tmp_path):
    with pytest.raises(FileNotFoundError, match="not a sentence-transformers model folder"):
        build_index([Passage("a#0", "a", "", "토지")], tmp_path / "index", dense_model=tmp_path, progress=False)
    assert list(tmp_path.iterdir()) == []


def test_opening_a_folder_that_is_not_an_index_says_so(tmp_path):
    with pytest.raises(RetrievalIndexError, match="not an index folder"):
        RetrievalIndex(tmp_path)


def test_dense_search_needs_an_index_built_with_embeddings(small_index):
    with pytest.raises(RetrievalIndexError, match="built without dense embeddings"):
        small_index.search(["토지"], k=1, method="dense")


def test_exact_top_k_merges_row_blocks_like_a_full_sort(monkeypatch):
    rng = np.random.default_rng(0)
    rows, queries = rng.normal(size=(50, 8)).astype(np.float32), rng.normal(size=(3, 8)).astype(np.float32)
    monkeypatch.setattr(dense, "SEARCH_ROWS_PER_STEP", 7)
    ids, scores = dense.top_k(rows, queries, k=5)
    expected = np.argsort(-(queries @ rows.T), axis=1)[:, :5]
    np.testing.assert_array_equal(ids, expected)
    np.testing.assert_allclose(scores, np.take_along_axis(queries @ rows.T, expected, axis=1), rtol=1e-6)


def test_dense_search_ranks_by_cosine_with_a_local_encoder(dense_index):
    assert dense_index.embeddings.shape == (len(DOCUMENTS), 32) and isinstance(dense_index.embeddings, np.memmap)
    # A passage's own text is its nearest neighbour even for a random encoder: identical input, cosine 1.
    hits = dense_index.search([f"{DOCUMENTS[3]['title']}\n{DOCUMENTS[3]['text']}"], k=3, method="dense")[0]
    assert hits[0].passage.doc == "gold" and hits[0].score == pytest.approx(1.0, abs=1e-5)
    assert [h.score for h in hits] == sorted((h.score for h in hits), reverse=True)


def test_hybrid_search_fuses_both_rankings(dense_index):
    query = ["토지 개혁은 누가 주장했나"]
    sparse = [h.passage.id for h in dense_index.search(query, k=5, method="bm25")[0]]
    vectors = [h.passage.id for h in dense_index.search(query, k=5, method="dense")[0]]
    fused = dense_index.search(query, k=5, method="hybrid")[0]
    assert fused[0].passage.id in {sparse[0], vectors[0]}
    assert {h.passage.id for h in fused} <= set(sparse) | set(vectors)


def test_reciprocal_rank_fusion_rewards_agreement():
    fused = reciprocal_rank_fusion([[1, 2, 3], [3, 1, 4]], k=4)
    assert [i for i, _ in fused] == [1, 3, 2, 4]
    assert fused[0][1] == pytest.approx(1 / 61 + 1 / 62)


# --- support columns ------------------------------------------------------------------------------------------


def test_queries_hold_the_chosen_fields_in_order():
    question = item("q", "누가 주장했나?", ("유형원", "이익"), paragraph="실학 지문")
    assert build_query(question) == "누가 주장했나?\n유형원\n이익"
    assert build_query(question, ("paragraph", "question")) == "실학 지문\n누가 주장했나?"
    with pytest.raises(ValueError, match="query fields"):
        build_query(question, ("answer",))


def test_support_passages_fill_the_support_template(small_index):
    items = [item("q1", "토지 개혁을 주장한 사람은?", ("유형원", "광개토대왕"))]
    hits = retrieve_for_items(items, small_index, k=2)
    [supported] = with_support(items, hits)
    assert json.loads(supported.metadata["support_ids"])[0] == "silhak#0"
    prompt = load_template("support").messages(supported)[-1]["content"]
    assert "참고 자료:\n실학: 조선 후기의 실학자들은" in prompt


def test_passages_already_in_the_paragraph_are_not_support(small_index):
    own = item("q1", "토지 개혁을 주장한 사람은?", ("유형원", "이익"), paragraph=DOCUMENTS[0]["text"])
    kept = retrieve_for_items([own], small_index, k=2)[0]
    assert "silhak#0" not in [h.passage.id for h in kept]
    assert retrieve_for_items([own], small_index, k=2, exclude_paragraph=False)[0][0].passage.id == "silhak#0"


@pytest.mark.parametrize(
    ("source", "min_with_support"),
    # All 19 KLUE rows find a passage sharing a term; 100 of the first 120 competition rows did.
    [("klue", 19), pytest.param("competition", 100, marks=competition_marks("train.csv"))],
)
def test_retrieve_writes_every_row_of_a_real_file_with_support(tmp_path, capsys, source, min_with_support):
    rows = real_items(source, competition_file="train.csv")[:120]
    write_items(rows, tmp_path / "data.csv", shape="competition")
    corpus = [{"id": r.id, "text": r.paragraph} for r in rows]
    write_jsonl(tmp_path / "corpus.jsonl", corpus)
    assert retrieval_main(["index", str(tmp_path / "corpus.jsonl"), "--output", str(tmp_path / "index")]) == 0
    argv = ["retrieve", str(tmp_path / "data.csv"), "--index", str(tmp_path / "index"), "--top-k", "2"]
    argv += ["--query-fields", "paragraph,question,choices", "--output", str(tmp_path / "out.csv")]
    assert retrieval_main(argv) == 0
    out = load_items(tmp_path / "out.csv")
    assert [i.id for i in out] == [i.id for i in rows]
    assert [i.answer for i in out] == [i.answer for i in rows]
    own_doc = {r.id: r.id for r in rows}
    # Each item's own paragraph would rank first; it is already in the prompt, so it is never its support.
    assert all(own_doc[i.id] not in {p.split("#")[0] for p in json.loads(i.metadata["support_ids"])} for i in out)
    assert sum(bool(i.metadata["support"]) for i in out) >= min_with_support
    assert "queries/s" in capsys.readouterr().out


def test_separators_typed_on_a_command_line_keep_korean_text():
    assert unescape("\\n--- 참고 ---\\n") == "\n--- 참고 ---\n"
    assert unescape("\\t") == "\t"


def test_cli_errors_name_the_file_and_exit_2(tmp_path, capsys):
    path = write_jsonl(tmp_path / "c.jsonl", [{"id": "x", "body": "본문"}])
    assert retrieval_main(["index", str(path), "--output", str(tmp_path / "index")]) == 2
    assert "c.jsonl, line 1: no 'text' field" in capsys.readouterr().err
    data = tmp_path / "d.csv"
    write_items([item("q", "질문", ("가", "나"))], data)
    assert retrieval_main(["retrieve", str(data), "--index", str(tmp_path), "--output", str(tmp_path / "o.csv")]) == 2
    assert "not an index folder" in capsys.readouterr().err
    assert not (tmp_path / "o.csv").exists()


# --- RAFT -----------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def raft_index(tmp_path_factory) -> RetrievalIndex:
    """Thirty topic passages: enough distractors that are not among an item's top candidates."""
    folder = tmp_path_factory.mktemp("raft")
    topics = ["토지 제도", "광합성", "삼국 시대", "금본위제", "조석 현상", "화산 활동", "민주주의", "세포 분열"]
    records = [
        {
            "id": f"t{n}",
            "text": f"{topics[n % len(topics)]}에 관한 {n}번째 설명이다. 항목 {n}은 고유 번호 {n * 7}을 가진다.",
        }
        for n in range(30)
    ]
    passages, _ = read_passages([write_jsonl(folder / "corpus.jsonl", records)])
    build_index(passages, folder / "index", progress=False)
    return RetrievalIndex(folder / "index")


def raft_items(count: int) -> list[Item]:
    return [item(f"q{n}", f"항목 {n}의 고유 번호는?", (str(n * 7), str(n))) for n in range(count)]


def test_raft_puts_the_oracle_among_k_passages_for_the_chosen_fraction(raft_index):
    items, report = build_raft_items(raft_items(30), raft_index, k=4, oracle_fraction=0.5, seed=3)
    assert [i.id for i in items] == [f"q{n}" for n in range(30)]
    assert all(len(json.loads(i.metadata["support_ids"])) == 4 for i in items)
    with_oracle = [i for i in items if i.metadata["raft_oracle"] == "1"]
    assert report.with_oracle == len(with_oracle) and 8 <= len(with_oracle) <= 22
    for supported in with_oracle:
        number = supported.id[1:]
        assert f"t{number}#0" in json.loads(supported.metadata["support_ids"])  # its own numbered passage
    positions = {json.loads(i.metadata["support_ids"]).index(f"t{i.id[1:]}#0") for i in with_oracle}
    assert len(positions) > 1  # the oracle's place varies, so position cannot stand in for relevance


def test_raft_without_oracles_holds_only_distractors(raft_index):
    items, report = build_raft_items(raft_items(10), raft_index, k=3, oracle_fraction=0.0)
    assert report.with_oracle == 0
    for supported in items:
        assert f"t{supported.id[1:]}#0" not in json.loads(supported.metadata["support_ids"])


def test_raft_is_reproducible_from_its_seed(raft_index):
    first, _ = build_raft_items(raft_items(10), raft_index, seed=7)
    again, _ = build_raft_items(raft_items(10), raft_index, seed=7)
    other, _ = build_raft_items(raft_items(10), raft_index, seed=8)
    assert [i.metadata for i in first] == [i.metadata for i in again] != [i.metadata for i in other]


def test_raft_takes_the_oracle_from_the_oracle_id_column(raft_index):
    labelled = [item("q1", "아무 질문", ("가", "나"), oracle_id="t5#0")]
    [supported], report = build_raft_items(labelled, raft_index, oracle_fraction=1.0)
    assert "t5#0" in json.loads(supported.metadata["support_ids"]) and report.oracle_from_column == 1
    with pytest.raises(ValueError, match="item 'q1', column 'oracle_id': passage 'nope' is not in the index"):
        build_raft_items([item("q1", "질문", ("가", "나"), oracle_id="nope")], raft_index)


def test_raft_output_trains_and_predicts_with_the_support_template(raft_index, tiny_model_dir, tmp_path):
    import lightning as L

    from suneung_lit.backbone import BaseSettings
    from suneung_lit.data.datamodule import MultipleChoiceDataModule
    from suneung_lit.module import QLoRAMultipleChoice

    items, _ = build_raft_items(raft_items(12), raft_index, k=2, seed=1)
    write_items(items, tmp_path / "raft.csv")
    write_items(items[:4], tmp_path / "val.csv")
    datamodule = MultipleChoiceDataModule(
        str(tiny_model_dir), train_path=str(tmp_path / "raft.csv"), val_path=str(tmp_path / "val.csv"),
        predict_path=str(tmp_path / "raft.csv"), template="support", max_length=512, train_batch_size=4,
        cache_dir=str(tmp_path / "cache"),
    )  # fmt: skip
    module = QLoRAMultipleChoice(str(tiny_model_dir), base=BaseSettings(compute_dtype="float32", dtype="float32"))
    quiet = dict(accelerator="cpu", logger=False, enable_progress_bar=False, enable_model_summary=False)
    L.Trainer(max_steps=2, enable_checkpointing=False, num_sanity_val_steps=0, limit_val_batches=0, **quiet).fit(
        module, datamodule=datamodule
    )
    outputs = L.Trainer(**quiet).predict(module, datamodule=datamodule)
    assert sorted(i for batch in outputs for i in batch["id"]) == sorted(i.id for i in items)
    # The encoded prompt holds the support passages.
    first = datamodule.tokenizer.decode(datamodule.encoded["predict"][0]["input_ids"])
    assert "참고 자료:" in first and items[0].metadata["support"].split("\n\n")[0][:10] in first
