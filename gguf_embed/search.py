"""Query → ranked files (or chunks): vector (sqlite-vec), keyword (FTS5 BM25), or hybrid
(rank fusion, the default).  By default each file is one result, its best chunk's lines and
snippet with the file's score; ``group="chunk"`` ranks chunks (see fusion.py).

Vector search on a large index takes a coarse pass over sign bits (Hamming distance) held in
memory (vector_cache.py; sqlite-vec's own KNN over them for an old index opened read-only) and
rescores the candidates exactly with their float vectors from SQLite; a small index, or a path
filter matching few chunks, is scanned exactly with sqlite-vec's cosine distance.
"""

from __future__ import annotations

import contextlib
import math
import re
import threading
import warnings
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from . import fusion, vector_cache
from . import store_keyword_cache as keyword_cache
from . import store_keyword_postings as keyword_postings
from . import store_keyword_topk as keyword_topk
from ._text import check_text
from ._vectors import bit_blob, vec_blob
from .errors import InputError, NonFiniteVectors, QueryTruncated
from .keywords import CJK_COLUMN, CJK_WEIGHT, index_text, query_terms
from .keywords import fts_query as fts_query
from .path_glob import PathGlob
from .store import Store

if TYPE_CHECKING:
    from .protocol import EmbeddingEngine

MODES = ("hybrid", "vector", "keyword")
GROUPS = ("file", "chunk")
EXACT_BELOW = 10_000  # chunks: below this an exact scan takes under ~20 ms
# Coarse candidates: 10 per wanted result, at least 100, more on smaller indexes, where sign
# bits separate neighbours less well, and one per COARSE_SHARE chunks on large ones, where more
# neighbours crowd in (measured in BENCHMARKS.md: at 10^6 chunks 100 candidates gave
# recall@10 0.58-0.65, 500 0.96, 800 0.99-1.00, 1,000 1.00 at 1024 and 2560 dims).
COARSE_FACTOR = 10
COARSE_MIN = 100
COARSE_BUDGET = 4_000_000  # candidates = max(..., COARSE_BUDGET // chunks)
COARSE_SHARE = 1_000  # candidates = max(..., chunks // COARSE_SHARE)
WORD = re.compile(r"\w+", re.UNICODE)
KEYWORD_TOPK_FROM = 10_000  # chunks: below this FTS5 scores every match in a few ms
FTS_WEIGHTS = (1.0, CJK_WEIGHT)  # bm25's column weights: the text, then its CJK bigrams
FILE_POOL = 50  # chunks per list when grouping by file: at least this, or 5 per result


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
           mode: str = "hybrid", path_glob: PathGlob | None = None,
           exact: bool | None = None, group: str = "file",
           rerank: Callable[[str, list[tuple[int, float]]], list[tuple[int, float]]] | None
           = None, allow: Callable[[str], bool] | None = None) -> list[SearchResult]:
    """Rank files (``group="file"``) or chunks (``"chunk"``) for ``query``.  ``query_vector``
    (already embedded with the query prompt and cut to the index's dimensions) is needed for
    vector and hybrid modes.  ``rerank`` (see reranker.SearchReranker) reorders the fused
    candidates (each file's best chunk, or the chunks), best first.  A document whose path
    ``allow`` refuses (see walk.Bounds) is never returned: the next candidates take its
    place."""
    if mode not in MODES:
        raise InputError(f"mode must be one of {', '.join(MODES)}, got {mode!r}", param="mode")
    if group not in GROUPS:
        raise InputError(f"group must be one of {', '.join(GROUPS)}, got {group!r}",
                         param="group")
    if k < 1:
        raise InputError(f"k must be at least 1, got {k}", param="k")
    if not query.strip():
        raise InputError("the query is empty", param="query")
    check_text(query, "the query", "query")
    pool = pool_size(k, mode, group, getattr(rerank, "candidates", 0))
    lists = candidates(store, query_vector, query, mode, pool, path_glob, exact, coarse=k)
    if group == "chunk":
        fused = fusion.rrf(lists) if mode == "hybrid" else dict(lists[0])
        order = sorted(fused.items(), key=lambda item: (-item[1], item[0]))
    else:
        doc_of = chunk_docs(store, [chunk_id for hits in lists for chunk_id, _ in hits])
        files = (fusion.fuse_files(lists, doc_of) if mode == "hybrid"
                 else fusion.best_per_file(lists[0], doc_of))
        order = [(chunk_id, score) for _, chunk_id, score in files]
    if rerank is not None:
        order = rerank(query, order)
    terms = set(query_terms(query))
    results: list[SearchResult] = []
    done = 0
    while len(results) < k and done < len(order):
        part = order[done:done + k - len(results)]
        done += len(part)
        # the path filter again, from SQLite: a damaged INDEX.bits (a chunk given another
        # document) changes which candidates are rescored, never which chunks are returned
        rows = store.chunk_rows([chunk_id for chunk_id, _ in part], path_glob)
        for chunk_id, score in part:
            row = rows.get(chunk_id)
            if row is None:  # deleted since the ranking (a concurrent index run), or filtered
                continue
            if allow is not None and not allow(row.path):
                continue  # outside the indexed roots (a symlink): never served
            results.append(SearchResult(
                path=row.path, score=round(float(score), 6), start_line=row.start_line,
                end_line=row.end_line, snippet=snippet(row.text, terms), chunk_id=chunk_id,
                start_page=row.start_page, end_page=row.end_page))
    return results


def embed_queries(engine: EmbeddingEngine, queries: list[str], dimensions: int | None, *,
                  stacklevel: int = 2) -> np.ndarray:
    """The vectors of ``queries`` (each checked: not empty, valid text), embedded together as
    queries and cut to ``dimensions``.  A query longer than the model's context is cut to fit
    and said so: a :class:`QueryTruncated` warning (``stacklevel`` as :func:`warnings.warn`'s,
    counted from the caller), which the caller shows or logs."""
    label = (lambda i: "the query") if len(queries) == 1 else (lambda i: f"query {i}")
    for i, q in enumerate(queries):
        if not q.strip():
            raise InputError(f"{label(i)} is empty", param="query")
        check_text(q, label(i), "query")
    result = engine.encode(queries, query=True, dimensions=dimensions, truncate=True)
    for i in result.truncated:
        warnings.warn(QueryTruncated(QueryTruncated.text(label(i), engine.max_tokens), index=i,
                                     limit=engine.max_tokens), stacklevel=stacklevel + 1)
    return result.vectors


def chunk_docs(store: Store, ids: list[int]) -> dict[int, int]:
    """chunk id -> document id of these chunks that exist (per-file grouping): from the
    sign-bit cache's table when it is at this read transaction's state, else from SQLite."""
    held = vector_cache.chunk_docs(store, ids)
    return held if held is not None else store.chunk_docs(ids)


def pool_size(k: int, mode: str, group: str, rerank_candidates: int = 0) -> int:
    """How many chunks each ranked list of :func:`search` holds."""
    pool = max(FILE_POOL, 5 * k)  # enough chunks to find k files
    if group == "chunk":
        pool = k if mode != "hybrid" else max(50, 4 * k)
    return max(pool, rerank_candidates)


def candidates(store: Store, query_vector: np.ndarray | None, query: str, mode: str, pool: int,
               path_glob: PathGlob | None = None, exact: bool | None = None,
               coarse: int | None = None) -> list[list[tuple[int, float]]]:
    """The ranked chunk lists a mode fuses: [vector], [keyword] or [vector, keyword]."""
    lists: list[list[tuple[int, float]]] = []
    if mode == "hybrid" and query_vector is not None and not path_glob:
        both = _both_at_once(store, query_vector, query, pool, exact, coarse)
        if both is not None:
            return both
    if mode in ("vector", "hybrid"):
        if query_vector is None:
            raise InputError("vector search needs a query vector", param="query")
        lists.append(vector_hits(store, query_vector, pool, path_glob, exact=exact,
                                 coarse=coarse))
    if mode in ("keyword", "hybrid"):
        lists.append(keyword_hits(store, query, pool, path_glob))
    return lists


def _both_at_once(store: Store, query_vector: np.ndarray, query: str, pool: int,
                  exact: bool | None, coarse: int | None) -> list[list[tuple[int, float]]] | None:
    """Hybrid's two lists, the keyword one summed from held postings (numpy, no SQL) in a
    thread while this one searches the vectors; None unless every query word is held."""
    key = _fast_keyword_key(store)
    phrases = None if key is None else keyword_postings.held(
        key, query_terms(query, store.fts_format), FTS_WEIGHTS)
    if phrases is None:
        return None
    found: list[list[tuple[int, float]] | None] = []

    def keyword() -> None:
        with contextlib.suppress(Exception):  # the serial path runs it again, and raises
            found.append(keyword_postings.best(phrases, pool))

    thread = threading.Thread(target=keyword, name="gguf-embed keyword half")
    thread.start()
    try:
        vector = vector_hits(store, query_vector, pool, exact=exact, coarse=coarse)
    finally:
        thread.join()
    if not found or found[0] is None:
        return None  # the thread failed (the serial path will say why) or could not sum
    return [vector, [(chunk_id, -score) for chunk_id, score in found[0]]]


def vector_hits(store: Store, query_vector: np.ndarray, k: int,
                path_glob: PathGlob | None = None, *, exact: bool | None = None,
                coarse: int | None = None) -> list[tuple[int, float]]:
    """(chunk id, cosine similarity), best first.  Chunks whose stored vector holds NaN or
    Inf are left out (with a :class:`~gguf_embed.errors.NonFiniteVectors` warning).

    ``coarse``: how many results are wanted when ``k`` is a larger pool (per-file grouping,
    fusion): the sign-bit candidates rescored are counted for that many (and at least ``k``),
    so grouping by file costs what per-chunk search does."""
    if store.dims is None:
        return []
    q = np.asarray(query_vector, dtype=np.float32)
    state = vector_cache.state_of(store)
    total = state.inserted - state.deleted if state is not None else store.chunk_count()
    if exact is None:
        exact = total < EXACT_BELOW
    bits = None if exact else vector_cache.current(store)
    if bits is None:  # an exact scan, or an old read-only index: sqlite-vec alone
        return _sqlite_hits(store, q, k, path_glob, exact)
    mask = None
    if path_glob:
        mask = bits.doc_mask(store.document_ids(path_glob))
        total = int(mask.sum())
        if total < EXACT_BELOW:
            return _sqlite_hits(store, q, k, path_glob, True)
    count = max(k, coarse_candidates(min(coarse or k, k), total))
    return rescore(store, q, bits.nearest(q, count, mask).tolist(), k)


def _sqlite_hits(store: Store, q: np.ndarray, k: int, path_glob: PathGlob | None,
                 exact: bool) -> list[tuple[int, float]]:
    """Today's path without the in-memory cache: sqlite-vec's exact cosine scan (small
    indexes, path filters), or its Hamming KNN over sign bits rescored exactly."""
    blob = vec_blob(q)
    if path_glob or exact:
        hits = [(chunk_id, 1.0 - d) for chunk_id, d in store.nearest(blob, k, path_glob)]
        return _finite(store, hits)
    total = store.chunk_count()  # sqlite-vec's KNN slows with k: 100 at 10^6 as before
    count = coarse_candidates(k, total, share=False)
    return rescore(store, q, store.nearest_bits(bit_blob(q), count), k)


def rescore(store: Store, q: np.ndarray, ids: list[int], k: int) -> list[tuple[int, float]]:
    """The ``k`` of these chunks closest to ``q`` by the cosine of their float vectors."""
    found, matrix = store.vectors(ids)
    if not found:
        return []
    with np.errstate(invalid="ignore", over="ignore", divide="ignore"):
        sims = (matrix @ q) / (np.linalg.norm(matrix, axis=1) * np.linalg.norm(q) + 1e-12)
    bad = ~np.isfinite(sims)
    if bad.any():
        _report(store, [found[i] for i in np.flatnonzero(bad)])
        sims[bad] = -np.inf
    order = np.argsort(-sims, kind="stable")[:k]
    return [(found[i], float(sims[i])) for i in order if not bad[i]]


_reported: set[tuple[str, int]] = set()


def _finite(store: Store, hits: list[tuple[int, float]]) -> list[tuple[int, float]]:
    bad = [chunk_id for chunk_id, sim in hits if not math.isfinite(sim)]
    if bad:
        _report(store, bad)
    return [hit for hit in hits if math.isfinite(hit[1])]


def _report(store: Store, chunk_ids: list[int]) -> None:
    """One warning per chunk and process for stored vectors that are not finite."""
    new = [i for i in chunk_ids if (str(store.path), i) not in _reported]
    if not new:
        return
    _reported.update((str(store.path), i) for i in new)
    rows = store.chunk_rows(new)
    paths = sorted({rows[i].path for i in new if i in rows})
    warnings.warn(NonFiniteVectors(
        f"index {store.path}: {len(new)} chunk(s) have vectors with NaN or infinite values "
        f"and were left out of vector search ({', '.join(paths[:3])}"
        f"{', ...' if len(paths) > 3 else ''}); re-index those files"), stacklevel=3)


def coarse_candidates(k: int, total: int, *, share: bool = True) -> int:
    return min(max(COARSE_MIN, k * COARSE_FACTOR, COARSE_BUDGET // max(total, 1),
                   total // COARSE_SHARE if share else 0), max(total, 1))


def _fast_keyword_key(store: Store) -> tuple[str, Any] | None:
    """The key (file, index state) of the exact fast keyword paths (held postings, the
    MaxScore top k), or None where they do not apply: an FTS table of an older format, or
    fewer than ``KEYWORD_TOPK_FROM`` chunks (FTS5 scores every match in a few ms)."""
    if store.fts_format != CJK_COLUMN:
        return None
    state = vector_cache.state_of(store)
    if state is None or state.inserted - state.deleted < KEYWORD_TOPK_FROM:
        return None
    return str(store.path), state


def keyword_hits(store: Store, query: str, k: int, path_glob: PathGlob | None = None, *,
                 ahead: bool = False) -> list[tuple[int, float]]:
    """(chunk id, -bm25) best first.  ``ahead``: ranked before the search asks for it (a
    one-shot search's keyword half, beside the model's load): the search's own call, which
    finds it ready, is the one that counts the query's words as seen."""
    match = fts_query(query, store.fts_format)
    if not match:
        return []
    found = None
    with store.conn:  # one snapshot: the counts cached are those of the key's state
        key = _fast_keyword_key(store)
        if key is not None:
            # the same rows and scores as keyword_matches, without scoring every match
            terms = query_terms(query, store.fts_format)
            recent = (key, tuple(terms), k, path_glob)
            with _recent_lock:
                kept = _recent.get(recent)
                if kept is not None:  # this index state, these words: the same answer
                    _recent[recent] = (kept[0], False)
                    _recent.move_to_end(recent)
            if kept is not None:
                if not kept[1] and not path_glob:  # asked again: a long-running process
                    keyword_postings.remember(key, terms, FTS_WEIGHTS)
                return list(kept[0])
            if not path_glob:  # common words' shares from INDEX.keywords, then held ones
                found = keyword_cache.topk(store.conn, store.path, key, terms, k, FTS_WEIGHTS)
                if found is None:
                    found = keyword_postings.topk(store.conn, key, terms, k, FTS_WEIGHTS)
                elif not ahead:
                    keyword_postings.remember(key, terms, FTS_WEIGHTS)
            if found is None:
                found = keyword_topk.topk(store.conn, key, terms, k, FTS_WEIGHTS, path_glob)
    if found is None:
        found = store.keyword_matches(match, k, path_glob)
    hits = [(chunk_id, -score) for chunk_id, score in found]
    if key is not None:
        with _recent_lock:
            _recent[recent] = (hits, ahead)
            if len(_recent) > RECENT_KEYWORD_LISTS:
                _recent.popitem(last=False)
    return list(hits)


# (index file and state, query words, k, path filter) -> keyword_hits' answer, for the large
# indexes of the fast paths: a query asked again (a server's repeated queries, a one-shot
# search's keyword half ranked while the model loads: cli/_search.py) costs nothing, and a
# write moves the state on, so an answer is never reused for another state
RECENT_KEYWORD_LISTS = 64
_recent: OrderedDict[tuple[Any, ...], tuple[list[tuple[int, float]], bool]] = OrderedDict()
_recent_lock = threading.Lock()


def forget_recent() -> None:
    """Drop the keyword answers kept (benchmarks timing queries asked before; tests)."""
    with _recent_lock:
        _recent.clear()


def snippet(text: str, terms: set[str], width: int = 240) -> str:
    """The lines of a chunk that share most keyword terms (``query_terms``) with the query,
    from the original text, on one line."""
    lines = [line.strip() for line in text.split("\n") if line.strip()]
    if not lines:
        return ""
    best, best_score = 0, -1
    for i, line in enumerate(lines):
        score = sum(1 for w in WORD.findall(index_text(line).lower()) if w in terms)
        if score > best_score:
            best, best_score = i, score
    out = " ".join(lines[best:best + 3])
    return out if len(out) <= width else out[: width - 1].rstrip() + "…"
