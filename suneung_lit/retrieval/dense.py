"""Dense retrieval with a local sentence-transformers model folder (e.g. bge-m3): normalised embeddings, exact
inner-product search over a memory-mapped matrix. Nothing is fetched: the folder must hold the whole model."""

from __future__ import annotations

from collections.abc import Sequence
from functools import lru_cache
from pathlib import Path

import numpy as np

from suneung_lit.retrieval.analysis import MissingRetrievalDependency

# Rows scored per step: bounds the temporary score matrix (queries x rows) whatever the corpus size.
SEARCH_ROWS_PER_STEP = 65_536


@lru_cache(maxsize=2)
def load_encoder(folder: str, device: str | None = None):
    """A SentenceTransformer from a local folder; loaded once per process."""
    try:
        from sentence_transformers import SentenceTransformer
    except ImportError as err:
        raise MissingRetrievalDependency(
            "dense retrieval needs sentence-transformers: pip install 'suneung-lit[retrieval]'"
        ) from err
    path = Path(folder)
    if not (path / "modules.json").is_file() and not (path / "config.json").is_file():
        raise FileNotFoundError(f"{path}: not a sentence-transformers model folder (no modules.json or config.json)")
    return SentenceTransformer(str(path), device=device, local_files_only=True)


def encode(folder: str | Path, texts: Sequence[str], batch_size: int = 32, progress: bool = False) -> np.ndarray:
    """Unit-length float32 embeddings, one row per text."""
    encoder = load_encoder(str(folder))
    vectors = encoder.encode(
        list(texts), batch_size=batch_size, normalize_embeddings=True, show_progress_bar=progress, convert_to_numpy=True
    )
    return np.ascontiguousarray(vectors, dtype=np.float32)


def top_k(embeddings: np.ndarray, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Row indices and cosine scores of the ``k`` best rows for each query, best first."""
    k = min(k, embeddings.shape[0])
    best_ids = np.empty((len(queries), 0), dtype=np.int64)
    best_scores = np.empty((len(queries), 0), dtype=np.float32)
    for start in range(0, embeddings.shape[0], SEARCH_ROWS_PER_STEP):
        scores = queries @ np.asarray(embeddings[start : start + SEARCH_ROWS_PER_STEP]).T
        ids = np.broadcast_to(np.arange(start, start + scores.shape[1]), scores.shape)
        merged_scores = np.concatenate([best_scores, scores], axis=1)
        merged_ids = np.concatenate([best_ids, ids], axis=1)
        keep = np.argpartition(-merged_scores, k - 1, axis=1)[:, :k] if merged_scores.shape[1] > k else None
        if keep is not None:
            merged_scores = np.take_along_axis(merged_scores, keep, axis=1)
            merged_ids = np.take_along_axis(merged_ids, keep, axis=1)
        best_scores, best_ids = merged_scores, merged_ids
    order = np.argsort(-best_scores, axis=1, kind="stable")
    return np.take_along_axis(best_ids, order, axis=1), np.take_along_axis(best_scores, order, axis=1)
