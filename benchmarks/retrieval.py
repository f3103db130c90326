"""Retrieval quality and speed on real text: Kiwi-morpheme BM25 against whitespace BM25, in one run.

The competition paragraphs (train + test, each distinct paragraph once) are the corpus; each item asks with its
question and choices only (not its paragraph), and a hit is any passage of its own paragraph among the top k.
Random ranking, the constant-predictor analogue, recalls k / (number of paragraphs) of them.

    python benchmarks/retrieval.py                      # ~1 minute on 2 CPU cores
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import add_data_dir_argument, append_result  # noqa: E402

from suneung_lit.data.records import load_items  # noqa: E402
from suneung_lit.retrieval.corpus import read_passages  # noqa: E402
from suneung_lit.retrieval.index import RetrievalIndex, build_index  # noqa: E402
from suneung_lit.retrieval.support import build_query  # noqa: E402

KS = (1, 5, 20)


def recall(rankings: list[list[str]], own: list[str], k: int) -> float:
    return sum(doc in ranking[:k] for ranking, doc in zip(rankings, own, strict=True)) / len(own)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_data_dir_argument(parser)
    parser.add_argument("--chunk-chars", type=int, default=700)
    parser.add_argument("--overlap", type=int, default=150)
    args = parser.parse_args()
    items = load_items(args.data_dir / "train.csv") + load_items(args.data_dir / "test.csv")
    doc_of: dict[str, str] = {}
    for item in items:
        doc_of.setdefault(item.paragraph.strip(), f"p{len(doc_of)}")
    own = [doc_of[item.paragraph.strip()] for item in items]
    queries = [build_query(item, ("question", "choices")) for item in items]
    print(f"{len(items)} items, {len(doc_of)} distinct paragraphs")

    with tempfile.TemporaryDirectory() as folder:
        corpus = Path(folder) / "paragraphs.jsonl"
        corpus.write_text(
            "".join(json.dumps({"id": d, "text": t}, ensure_ascii=False) + "\n" for t, d in doc_of.items()),
            encoding="utf-8",
        )
        passages, report = read_passages([corpus], chunk_chars=args.chunk_chars, overlap=args.overlap)
        print("; ".join(report.lines()))
        for analyzer in ("whitespace", "kiwi"):
            started = time.perf_counter()
            build_index(passages, Path(folder) / analyzer, analyzer=analyzer, progress=False)
            index_seconds = time.perf_counter() - started
            size_mb = sum(p.stat().st_size for p in (Path(folder) / analyzer).rglob("*") if p.is_file()) / 2**20
            index = RetrievalIndex(Path(folder) / analyzer)
            started = time.perf_counter()
            hits = index.search(queries, max(KS))
            query_seconds = time.perf_counter() - started
            rankings = [[h.passage.doc for h in row] for row in hits]
            recalls = {k: recall(rankings, own, k) for k in KS}
            random_recalls = {k: k / len(doc_of) for k in KS}
            print(
                f"{analyzer}: recall@1 {recalls[1]:.3f}, @5 {recalls[5]:.3f}, @20 {recalls[20]:.3f} "
                f"(random {random_recalls[1]:.4f} / {random_recalls[5]:.4f} / {random_recalls[20]:.4f}); "
                f"index {index_seconds:.1f} s, {size_mb:.1f} MiB; {len(queries) / query_seconds:.0f} queries/s"
            )
            append_result(
                "retrieval (own paragraph from question + choices)",
                ["analyzer", "paragraphs", "passages", "queries", "recall@1", "recall@5", "recall@20",
                 "random @1/@5", "index s", "index MiB", "queries/s"],
                [analyzer, len(doc_of), len(passages), len(queries), f"{recalls[1]:.3f}", f"{recalls[5]:.3f}",
                 f"{recalls[20]:.3f}", f"{random_recalls[1]:.4f}/{random_recalls[5]:.4f}", f"{index_seconds:.1f}",
                 f"{size_mb:.1f}", f"{len(queries) / query_seconds:.0f}"],
            )  # fmt: skip


if __name__ == "__main__":
    main()
