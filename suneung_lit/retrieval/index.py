"""The on-disk index: passages, a bm25s BM25 index over their analysed terms, and optionally dense embeddings.

Layout of an index folder (written to a temporary folder and renamed into place, so a crash leaves no half index):

- ``manifest.json``: analyser, chunking, counts, the dense model folder if any;
- ``passages.jsonl`` + ``offsets.npy``: one passage per line and each line's byte offset, read through a memory map
  so a large corpus is not loaded to answer a few queries;
- ``bm25/``: the bm25s index (sparse score matrix), memory-mapped on load;
- ``dense.npy``: unit-length passage embeddings, memory-mapped on load.
"""

from __future__ import annotations

import json
import mmap
import shutil
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from suneung_lit.retrieval import dense
from suneung_lit.retrieval.analysis import get_analyzer
from suneung_lit.retrieval.corpus import Passage
from suneung_lit.retrieval.fusion import reciprocal_rank_fusion

FORMAT_VERSION = 1
METHODS = ("bm25", "dense", "hybrid")
# Texts analysed per step: large enough for Kiwi's batching, small enough for a progress bar that moves.
ANALYSIS_BATCH = 512
# Hybrid search fuses this many candidates from each retriever (at least k).
HYBRID_CANDIDATES = 100


class RetrievalIndexError(ValueError):
    """An index folder is missing, incomplete or cannot answer the request."""


@dataclass(frozen=True)
class Hit:
    passage: Passage
    score: float


def analyse(texts: Sequence[str], analyzer: str, progress: Callable[[int], None] | None = None) -> list[list[str]]:
    """Index terms of each text, in batches (``progress`` is told how many texts each batch held)."""
    analyse_batch = get_analyzer(analyzer)
    terms: list[list[str]] = []
    for start in range(0, len(texts), ANALYSIS_BATCH):
        batch = texts[start : start + ANALYSIS_BATCH]
        terms.extend(analyse_batch(batch))
        if progress is not None:
            progress(len(batch))
    return terms


def _write_passages(passages: Sequence[Passage], folder: Path) -> None:
    offsets = [0]
    with open(folder / "passages.jsonl", "wb") as file:
        for passage in passages:
            line = json.dumps(passage.__dict__, ensure_ascii=False).encode("utf-8") + b"\n"
            file.write(line)
            offsets.append(offsets[-1] + len(line))
    np.save(folder / "offsets.npy", np.asarray(offsets, dtype=np.int64))


def build_index(
    passages: Sequence[Passage],
    folder: str | Path,
    analyzer: str = "kiwi",
    dense_model: str | Path | None = None,
    overwrite: bool = False,
    progress: bool = True,
    extra: dict | None = None,
) -> dict:
    """Analyse, index and save ``passages`` into ``folder``; returns the manifest written there."""
    import bm25s
    from rich.progress import Progress

    folder = Path(folder)
    if folder.exists() and not overwrite:
        raise RetrievalIndexError(f"{folder} already exists; pass overwrite=True (--overwrite) to replace it")
    if folder.exists() and any(folder.iterdir()) and not (folder / "manifest.json").is_file():
        # Replacing means deleting: never delete a folder that is not an index.
        raise RetrievalIndexError(f"{folder} holds files and is not an index; choose another --output")
    if dense_model is not None:
        dense.load_encoder(str(dense_model))  # a wrong folder fails now, not after the BM25 work
    texts = [f"{p.title}\n{p.text}" if p.title else p.text for p in passages]
    with Progress(disable=not progress, transient=True) as bar:
        task = bar.add_task(f"analysing passages ({analyzer})", total=len(texts))
        terms = analyse(texts, analyzer, lambda n: bar.advance(task, n))
    empty = sum(1 for t in terms if not t)
    retriever = bm25s.BM25()
    retriever.index(terms, show_progress=False)

    folder.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(dir=folder.parent, prefix=f".{folder.name}."))
    try:
        retriever.save(staging / "bm25", show_progress=False)
        _write_passages(passages, staging)
        manifest = {
            "format_version": FORMAT_VERSION,
            "analyzer": analyzer,
            "passages": len(passages),
            "passages_without_terms": empty,
            "vocabulary": len(retriever.vocab_dict),
            "dense_model": None,
            **(extra or {}),
        }
        if dense_model is not None:
            vectors = dense.encode(dense_model, texts, progress=progress)
            np.save(staging / "dense.npy", vectors)
            manifest["dense_model"] = str(Path(dense_model).resolve())
            manifest["dense_dim"] = int(vectors.shape[1])
        (staging / "manifest.json").write_text(json.dumps(manifest, ensure_ascii=False, indent=2), encoding="utf-8")
        if folder.exists():
            shutil.rmtree(folder)
        staging.rename(folder)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return manifest


class PassageStore:
    """Passages by row number, read on demand from the memory-mapped passages.jsonl."""

    def __init__(self, folder: Path):
        self.offsets = np.load(folder / "offsets.npy", mmap_mode="r")
        with open(folder / "passages.jsonl", "rb") as file:
            self._map = mmap.mmap(file.fileno(), 0, access=mmap.ACCESS_READ) if self.offsets[-1] else b""

    def __len__(self) -> int:
        return len(self.offsets) - 1

    def __getitem__(self, row: int) -> Passage:
        start, end = int(self.offsets[row]), int(self.offsets[row + 1])
        return Passage(**json.loads(self._map[start:end]))


class RetrievalIndex:
    """A saved index, opened for search; ``dense_model`` overrides the encoder folder recorded at build time."""

    def __init__(self, folder: str | Path, dense_model: str | Path | None = None):
        import bm25s

        self.folder = Path(folder)
        manifest_path = self.folder / "manifest.json"
        if not manifest_path.is_file():
            raise RetrievalIndexError(f"{self.folder}: not an index folder (no manifest.json); build one with 'index'")
        self.manifest = json.loads(manifest_path.read_text(encoding="utf-8"))
        if self.manifest.get("format_version") != FORMAT_VERSION:
            raise RetrievalIndexError(f"{self.folder}: index format {self.manifest.get('format_version')}, expected 1")
        self.passages = PassageStore(self.folder)
        self.bm25 = bm25s.BM25.load(self.folder / "bm25", mmap=True, show_progress=False)
        dense_path = self.folder / "dense.npy"
        self.embeddings = np.load(dense_path, mmap_mode="r") if dense_path.is_file() else None
        self.dense_model = str(dense_model or self.manifest.get("dense_model") or "") or None

    def __len__(self) -> int:
        return len(self.passages)

    def bm25_ranking(self, queries: Sequence[str], k: int) -> list[list[tuple[int, float]]]:
        """(row, score) of the best passages per query; passages sharing no term with the query are left out."""
        terms = analyse(list(queries), self.manifest["analyzer"])
        ids, scores = self.bm25.retrieve(terms, k=min(k, len(self)), show_progress=False, n_threads=0)
        return [
            [(int(i), float(s)) for i, s in zip(row_ids, row_scores, strict=True) if s > 0]
            for row_ids, row_scores in zip(ids, scores, strict=True)
        ]

    def dense_ranking(self, queries: Sequence[str], k: int) -> list[list[tuple[int, float]]]:
        if self.embeddings is None or self.dense_model is None:
            raise RetrievalIndexError(
                f"{self.folder}: built without dense embeddings; rebuild with --dense-model FOLDER"
            )
        ids, scores = dense.top_k(self.embeddings, dense.encode(self.dense_model, queries), k)
        return [
            [(int(i), float(s)) for i, s in zip(row_ids, row_scores, strict=True)]
            for row_ids, row_scores in zip(ids, scores, strict=True)
        ]

    def search(self, queries: Sequence[str], k: int, method: str = "bm25") -> list[list[Hit]]:
        """The ``k`` best passages for each query, best first.

        Fewer come back when the index holds fewer, or (BM25) when fewer passages share a term with the query.
        Hybrid scores are reciprocal-rank-fusion scores.
        """
        if method not in METHODS:
            raise ValueError(f"method must be one of {', '.join(METHODS)}, got {method!r}")
        if not queries:
            return []
        if method == "hybrid":
            depth = max(k, HYBRID_CANDIDATES)
            rankings = [
                reciprocal_rank_fusion([[i for i, _ in sparse], [i for i, _ in dense_]], k)
                for sparse, dense_ in zip(
                    self.bm25_ranking(queries, depth), self.dense_ranking(queries, depth), strict=True
                )
            ]
        elif method == "bm25":
            rankings = self.bm25_ranking(queries, k)
        else:
            rankings = self.dense_ranking(queries, k)
        return [[Hit(self.passages[row], score) for row, score in ranking] for ranking in rankings]
