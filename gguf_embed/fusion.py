"""Fusing ranked lists of chunks, and grouping chunks into files.

A list is ``[(chunk id, score), ...]``, best first.  Hybrid search fuses the vector list and the
keyword list.  Per-file results rank *files* in each list by their best chunk, then fuse those
file rankings with reciprocal ranks (``1 / (k + rank)``); the file's row shows its best chunk.

The choice and its constant were measured with scripts/eval_fusion.py (BENCHMARKS.md): on two
English query sets and both halves of one, file-level RRF with k = 5 was at or near the top of
every column, where a convex mix of normalized scores won one column and lost another.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

Hits = Sequence[tuple[int, float]]

CHUNK_RRF_K = 60  # --chunks: reciprocal-rank fusion of chunk lists, as before
FILE_RRF_K = 5  # per file: reciprocal-rank fusion of file rankings


def rrf(lists: Sequence[Hits], k: float = CHUNK_RRF_K) -> dict[int, float]:
    """Reciprocal-rank fusion of chunk lists: chunk id → sum of 1 / (k + rank)."""
    fused: dict[int, float] = {}
    for hits in lists:
        for rank, (chunk_id, _) in enumerate(hits, start=1):
            fused[chunk_id] = fused.get(chunk_id, 0.0) + 1.0 / (k + rank)
    return fused


def best_per_file(hits: Hits, doc_of: Mapping[int, int]) -> list[tuple[int, int, float]]:
    """(file id, its best chunk id, that chunk's score) per file, best first."""
    seen: dict[int, tuple[int, int, float]] = {}
    for chunk_id, score in hits:
        doc = doc_of.get(chunk_id)
        if doc is not None and doc not in seen:
            seen[doc] = (doc, chunk_id, score)
    return list(seen.values())


def fuse_files(lists: Sequence[Hits], doc_of: Mapping[int, int],
               k: float = FILE_RRF_K) -> list[tuple[int, int, float]]:
    """Files ranked by reciprocal-rank fusion of their ranks in each list.

    Returns (file id, best chunk id, score), best first; a file's best chunk is the one that
    chunk-level fusion ranks highest among its chunks."""
    chunk_scores = rrf(lists)
    best: dict[int, int] = {}
    for chunk_id, _ in sorted(chunk_scores.items(), key=lambda item: (-item[1], item[0])):
        doc = doc_of.get(chunk_id)
        if doc is not None:
            best.setdefault(doc, chunk_id)
    scores: dict[int, float] = {}
    for hits in lists:
        for rank, (doc, _, _) in enumerate(best_per_file(hits, doc_of), start=1):
            scores[doc] = scores.get(doc, 0.0) + 1.0 / (k + rank)
    order = sorted(scores, key=lambda d: (-scores[d], best[d]))
    return [(doc, best[doc], scores[doc]) for doc in order]
