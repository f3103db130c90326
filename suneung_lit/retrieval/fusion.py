"""Reciprocal rank fusion: combines rankings whose scores are not comparable (BM25 sums vs cosine similarities)."""

from __future__ import annotations

from collections.abc import Sequence

# The constant from Cormack et al. (2009); it damps the weight of the very first ranks.
RRF_K = 60


def reciprocal_rank_fusion(rankings: Sequence[Sequence[int]], k: int, constant: int = RRF_K) -> list[tuple[int, float]]:
    """The ``k`` best ids by the sum of 1 / (constant + rank) over the rankings (rank from 1), best first.

    Ties keep the order in which ids first appear, scanning the rankings rank by rank.
    """
    scores: dict[int, float] = {}
    depth = max((len(r) for r in rankings), default=0)
    for rank in range(depth):
        for ranking in rankings:
            if rank < len(ranking):
                scores[ranking[rank]] = scores.get(ranking[rank], 0.0) + 1.0 / (constant + rank + 1)
    return sorted(scores.items(), key=lambda pair: -pair[1])[:k]
