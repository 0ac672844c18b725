"""Query → ranked chunks: vector (sqlite-vec), keyword (FTS5 BM25), or hybrid (RRF, default).

Vector search on a large index takes a coarse KNN pass in sqlite-vec over sign bits (Hamming
distance) and rescores the candidates exactly with their float vectors; a small index, or a
path filter, is scanned exactly with sqlite-vec's cosine distance.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from .errors import InputError
from .store import Store, bit_blob, vec_blob

MODES = ("hybrid", "vector", "keyword")
RRF_K = 60
EXACT_BELOW = 10_000  # chunks: below this an exact scan takes under ~20 ms
# Coarse candidates: 10 per wanted result, at least 100, and more on smaller indexes, where
# sign bits separate neighbours less well (measured in BENCHMARKS.md: recall@10 >= 0.98).
COARSE_FACTOR = 10
COARSE_MIN = 100
COARSE_BUDGET = 4_000_000  # candidates = max(..., COARSE_BUDGET // chunks)
WORD = re.compile(r"\w+", re.UNICODE)


@dataclass(frozen=True)
class SearchResult:
    path: str
    score: float
    start_line: int
    end_line: int
    snippet: str
    chunk_id: int
    start_page: int | None = None
    end_page: int | None = None
    rerank_score: float | None = None  # the reranker's own score, when reranked

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def search(store: Store, query_vector: np.ndarray | None, query: str, *, k: int = 10,
           mode: str = "hybrid", path_glob: str | None = None,
           exact: bool | None = None,
           rerank: Callable[[str, list[tuple[int, float]]], list[tuple[int, float]]] | None
           = None) -> list[SearchResult]:
    """Rank chunks for ``query``.  ``query_vector`` (already embedded with the query prompt and
    cut to the index's dimensions) is needed for vector and hybrid modes.  ``rerank`` (see
    reranker.SearchReranker) reorders the fused candidates, best first."""
    if mode not in MODES:
        raise InputError(f"mode must be one of {', '.join(MODES)}, got {mode!r}", param="mode")
    if k < 1:
        raise InputError(f"k must be at least 1, got {k}", param="k")
    if not query.strip():
        raise InputError("the query is empty", param="query")
    pool = k if mode != "hybrid" else max(50, 4 * k)
    pool = max(pool, getattr(rerank, "candidates", 0))
    ranked: dict[int, float] = {}
    if mode in ("vector", "hybrid"):
        if query_vector is None:
            raise InputError("vector search needs a query vector", param="query")
        hits = vector_hits(store, query_vector, pool, path_glob, exact=exact)
        ranked = dict(hits) if mode == "vector" else _fuse(ranked, hits)
    if mode in ("keyword", "hybrid"):
        hits = keyword_hits(store, query, pool, path_glob)
        ranked = dict(hits) if mode == "keyword" else _fuse(ranked, hits)
    order = sorted(ranked.items(), key=lambda item: (-item[1], item[0]))
    if rerank is not None:
        order = rerank(query, order)
    top = order[:k]
    rows = store.chunk_rows([chunk_id for chunk_id, _ in top])
    terms = {w.lower() for w in WORD.findall(query)}
    results = []
    for chunk_id, score in top:
        row = rows.get(chunk_id)
        if row is None:  # deleted since the ranking (a concurrent index run)
            continue
        results.append(SearchResult(
            path=row.path, score=round(float(score), 6), start_line=row.start_line,
            end_line=row.end_line, snippet=snippet(row.text, terms), chunk_id=chunk_id,
            start_page=row.start_page, end_page=row.end_page))
    return results


def _fuse(ranked: dict[int, float], hits: list[tuple[int, float]]) -> dict[int, float]:
    """Add one ranking's reciprocal-rank scores (RRF) to ``ranked``."""
    for rank, (chunk_id, _) in enumerate(hits):
        ranked[chunk_id] = ranked.get(chunk_id, 0.0) + 1.0 / (RRF_K + rank + 1)
    return ranked


def vector_hits(store: Store, query_vector: np.ndarray, k: int, path_glob: str | None = None,
                *, exact: bool | None = None) -> list[tuple[int, float]]:
    """(chunk id, cosine similarity), best first."""
    if store.dims is None:
        return []
    blob = vec_blob(query_vector)
    conn = store.conn
    if path_glob:
        rows = conn.execute(
            "SELECT c.id, vec_distance_cosine(v.embedding, ?) AS d FROM chunks c "
            "JOIN documents doc ON doc.id = c.doc_id JOIN chunk_vectors v ON v.chunk_id = c.id "
            "WHERE doc.path GLOB ? ORDER BY d LIMIT ?", (blob, path_glob, k)).fetchall()
        return [(int(r[0]), 1.0 - float(r[1])) for r in rows]
    (total,), = conn.execute("SELECT count(*) FROM chunks")  # via a small index: ~0.5 ms
    if exact is None:
        exact = total < EXACT_BELOW
    if exact:
        rows = conn.execute("SELECT chunk_id, vec_distance_cosine(embedding, ?) AS d "
                            "FROM chunk_vectors ORDER BY d LIMIT ?", (blob, k)).fetchall()
        return [(int(r[0]), 1.0 - float(r[1])) for r in rows]
    coarse = conn.execute("SELECT rowid FROM vec_bits WHERE embedding MATCH vec_bit(?) "
                          "AND k = ?", (bit_blob(query_vector), coarse_candidates(k, total))
                          ).fetchall()
    ids, matrix = store.vectors([int(r[0]) for r in coarse])
    if not ids:
        return []
    q = np.asarray(query_vector, dtype=np.float32)
    sims = (matrix @ q) / (np.linalg.norm(matrix, axis=1) * np.linalg.norm(q) + 1e-12)
    order = np.argsort(-sims)[:k]
    return [(ids[i], float(sims[i])) for i in order]


def coarse_candidates(k: int, total: int) -> int:
    return min(max(COARSE_MIN, k * COARSE_FACTOR, COARSE_BUDGET // max(total, 1)),
               max(total, 1))


def fts_query(query: str) -> str:
    """Free text → an FTS5 query that cannot be a syntax error: quoted terms joined by OR."""
    terms = dict.fromkeys(w.lower() for w in WORD.findall(query))
    return " OR ".join('"' + t.replace('"', '""') + '"' for t in terms)


def keyword_hits(store: Store, query: str, k: int,
                 path_glob: str | None = None) -> list[tuple[int, float]]:
    """(chunk id, -bm25) best first."""
    match = fts_query(query)
    if not match:
        return []
    if path_glob:
        rows = store.conn.execute(
            "SELECT f.rowid, bm25(fts_chunks) AS s FROM fts_chunks f "
            "JOIN chunks c ON c.id = f.rowid JOIN documents d ON d.id = c.doc_id "
            "WHERE fts_chunks MATCH ? AND d.path GLOB ? ORDER BY s LIMIT ?",
            (match, path_glob, k)).fetchall()
    else:
        rows = store.conn.execute(
            "SELECT rowid, bm25(fts_chunks) AS s FROM fts_chunks WHERE fts_chunks MATCH ? "
            "ORDER BY s LIMIT ?", (match, k)).fetchall()
    return [(int(r[0]), -float(r[1])) for r in rows]


def snippet(text: str, terms: set[str], width: int = 240) -> str:
    """The lines of a chunk that share most words with the query, on one line."""
    lines = [line.strip() for line in text.split("\n") if line.strip()]
    if not lines:
        return ""
    best, best_score = 0, -1
    for i, line in enumerate(lines):
        score = sum(1 for w in WORD.findall(line.lower()) if w in terms)
        if score > best_score:
            best, best_score = i, score
    out = " ".join(lines[best:best + 3])
    return out if len(out) <= width else out[: width - 1].rstrip() + "…"
