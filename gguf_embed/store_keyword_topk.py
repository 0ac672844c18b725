"""The top k of FTS5's BM25 for an OR query without scoring every match (issue 21).

A query's common words ("the", "a", "to") match nearly every chunk, and FTS5 scores every match
before ``ORDER BY ... LIMIT`` keeps k (1-3 s at 10^6 chunks).  BM25 is a sum of one term per
query phrase, and phrase i adds at most ``IDF_i * (k1 + 1)``, which is small for a common
phrase.  So (MaxScore): rank the rows that match a *rare* phrase with FTS5 on the rare phrases
alone (small posting lists), add the common phrases' exact share for the best of them, and stop
when the k-th full score beats every row left out: a row ranked lower by the rare phrases
(its rare score + the common phrases' bound) and a row that matches only common ones (their
bound).  When the test fails, or the form of the index or query is one this does not cover,
the caller runs today's query: the results are always today's (same rows, same order, same
scores: each is computed as FTS5's ``fts5Bm25Function`` computes it, in the same order).

The inputs FTS5's bm25 uses are taken from FTS5 itself: row count and total tokens (through an
auxiliary function on one row), each phrase's document count (``count(*)`` of the phrase,
cached per index state, see vector_cache.State), and each candidate's per-column tokens from
the table's own tokenizer over the stored chunk text (``keyword_columns``).
"""

from __future__ import annotations

import math
import threading
from collections import Counter
from collections.abc import Sequence
from typing import Any, cast

import apsw

from .keywords import keyword_columns
from .path_glob import PathGlob, where

K1 = 1.2
B = 0.75
COMMON_SHARE = 0.05  # phrases in more than this share of the rows start as "common"
# rows per wanted result taken by the rare phrases' ranking, in rounds until the bound holds
ROUNDS = (4, 16, 64, 256)
MAX_CACHED = 100_000  # document counts kept per index state
MAX_RARE_ROWS = 200_000  # above this many rare matches, today's query is no slower

_lock = threading.Lock()
_counts: dict[tuple[str, Any], dict[str, int]] = {}


def _phrase(term: str) -> str:
    return '"' + term.replace('"', '""') + '"'


def _stats_fn(api: apsw.FTS5ExtensionApi, *args: Any) -> str:
    return f"{api.row_count} {api.column_total_size(-1)}"


def table_tokenizer(conn: apsw.Connection) -> Any:
    """The tokenizer ``fts_chunks`` was made with ('porter unicode61', store_schema.py)."""
    return conn.fts5_tokenizer("porter", ["unicode61"])


def single_tokens(tokenizer: Any, terms: Sequence[str]) -> list[str] | None:
    """Each query phrase's one token as the table's ``tokenizer`` makes it (query mode), or
    None when some phrase is several tokens or none (the exact fast paths cover one-token
    phrases only)."""
    tokens: list[str] = []
    for term in terms:
        found = list(tokenizer(term.encode("utf-8"), apsw.FTS5_TOKENIZE_QUERY, None,
                               include_offsets=False, include_colocated=False))
        if len(found) != 1:
            return None
        tokens.append(cast(str, found[0]))
    return tokens


def topk(conn: apsw.Connection, cache_key: tuple[str, Any], terms: Sequence[str], k: int,
         weights: tuple[float, float], path_glob: PathGlob | None = None,
         share: float = COMMON_SHARE) -> list[tuple[int, float]] | None:
    """(rowid, bm25) of the ``k`` best rows of ``fts_chunks`` (columns text, cjk) for the OR of
    ``terms``, exactly as ``ORDER BY bm25(fts_chunks, *weights) LIMIT k`` returns them; or
    None when this cannot tell (the caller runs that query)."""
    if len(terms) < 2:
        return None
    tokenizer = table_tokenizer(conn)
    tokens = single_tokens(tokenizer, terms)
    if tokens is None:
        return None  # a phrase of several tokens (or none): not covered here
    counts = _doc_counts(conn, cache_key, terms)
    try:
        conn.register_fts5_function("gguf_embed_bm25_stats", _stats_fn)
    except apsw.Error:
        return None
    present = [i for i in range(len(terms)) if counts[i] > 0]
    if not present:
        return []  # no phrase matches anything
    rarest = min(present, key=lambda i: counts[i])
    row = conn.execute("SELECT gguf_embed_bm25_stats(fts_chunks) FROM fts_chunks "
                       "WHERE fts_chunks MATCH ? LIMIT 1", (_phrase(terms[rarest]),)).fetchone()
    if row is None:
        return None  # the index changed since the counts (outside a read transaction)
    n_row, n_token = (int(x) for x in str(row[0]).split())
    avgdl = float(n_token) / float(n_row)
    idf = []
    for n_hit in counts:
        value = math.log((n_row - n_hit + 0.5) / (n_hit + 0.5))
        idf.append(1e-6 if value <= 0.0 else value)
    rare = [i for i in range(len(terms)) if counts[i] <= share * n_row] or [rarest]
    scored: dict[int, float] = {}  # rowid → full bm25 (split-independent)
    memo: dict[str, tuple[list[float], int]] = {}
    for _ in range(3):
        common = [i for i in range(len(terms)) if i not in rare]
        if not common or sum(counts[i] for i in rare) > MAX_RARE_ROWS:
            return None
        bound = sum(idf[i] * (K1 + 1.0) for i in common)
        bound *= 1.0 + 1e-9  # room for rounding in FTS5's own rare scores
        best, theta = _rounds(conn, tokenizer, [terms[i] for i in rare], tokens, idf, k,
                              weights, avgdl, bound, path_glob, scored, memo)
        if best is not None:
            return best
        if theta is None:
            return None
        # MaxScore: the phrases that together stay below the k-th score found so far are
        # the common ones; the rest must be ranked by FTS5
        common, total = [], 0.0
        for i in sorted(range(len(terms)), key=lambda i: idf[i]):
            if (total + idf[i] * (K1 + 1.0)) * (1.0 + 1e-6) >= theta:
                break
            total += idf[i] * (K1 + 1.0)
            common.append(i)
        wider = [i for i in range(len(terms)) if i not in common]
        if set(wider) == set(rare):
            return None
        rare = wider
    return None


def _rounds(conn: apsw.Connection, tokenizer: Any, rare: list[str], tokens: list[str],
            idf: list[float], k: int, weights: tuple[float, float], avgdl: float,
            bound: float, path_glob: PathGlob | None, scored: dict[int, float],
            memo: dict[str, tuple[list[float], int]],
            ) -> tuple[list[tuple[int, float]] | None, float | None]:
    """The top k when the rows the ``rare`` phrases rank first settle it: (best, None); else
    (None, the k-th best full score found, or None when fewer than k rows were scored)."""
    match = " OR ".join(_phrase(term) for term in rare)
    bm25 = f"bm25(fts_chunks, {weights[0]!r}, {weights[1]!r})"
    theta = None
    limit = ROUNDS[-1] * k + 1  # FTS5 scores every match of ``rare`` whatever the limit
    if path_glob:
        under, globs = where("d.path", path_glob)
        ranked = conn.execute(
            f"SELECT f.rowid, {bm25} AS s FROM fts_chunks f "
            "JOIN chunks c ON c.id = f.rowid JOIN documents d ON d.id = c.doc_id "
            f"WHERE fts_chunks MATCH ? AND {under} ORDER BY s LIMIT ?",
            (match, *globs, limit)).fetchall()
    else:
        ranked = conn.execute(f"SELECT rowid, {bm25} AS s FROM fts_chunks "
                              "WHERE fts_chunks MATCH ? ORDER BY s LIMIT ?",
                              (match, limit)).fetchall()
    for want in (r * k for r in ROUNDS):
        rows = ranked[:want + 1]
        more = len(rows) > want
        ids = [int(cast(int, r[0])) for r in rows[:want]]
        new = _scores(conn, tokenizer, [i for i in ids if i not in scored], tokens, idf,
                      weights, avgdl, memo)
        if new is None:
            return None, None
        scored.update(new)
        best = sorted(scored.items(), key=lambda hit: (hit[1], hit[0]))[:k]
        if len(best) < k:
            return None, None  # fewer than k rows match a rare phrase
        theta = -best[-1][1]
        if theta <= bound:
            return None, theta  # a row of common phrases alone could be in the top k
        rest = -float(cast(float, rows[want][1])) * (1.0 + 1e-9) + bound if more else 0.0
        if theta > rest:
            return best, None
        if not more:
            break
    return None, theta


def _doc_counts(conn: apsw.Connection, cache_key: tuple[str, Any],
                terms: Sequence[str]) -> list[int]:
    """How many rows match each phrase (what FTS5's bm25 counts for its IDF), cached per
    index state."""
    with _lock:
        cached = _counts.get(cache_key)
        if cached is None:
            for key in [key for key in _counts if key[0] == cache_key[0]]:
                del _counts[key]
            cached = _counts[cache_key] = {}
        missing = [t for t in terms if t not in cached]
    found = {t: _count(conn, t) for t in missing}
    with _lock:
        if len(cached) > MAX_CACHED:
            cached.clear()
        cached.update(found)
    return [found[t] if t in found else cached[t] for t in terms]


def _count(conn: apsw.Connection, term: str) -> int:
    row = conn.execute("SELECT count(*) FROM fts_chunks WHERE fts_chunks MATCH ?",
                       (_phrase(term),)).fetchone()
    return 0 if row is None else int(cast(int, row[0]))


def _scores(conn: apsw.Connection, tokenizer: Any, ids: list[int], tokens: list[str],
            idf: list[float], weights: tuple[float, float], avgdl: float,
            memo: dict[str, tuple[list[float], int]]) -> dict[int, float] | None:
    """{rowid: bm25} of these rows for all phrases, computed as fts5Bm25Function does
    (``memo``: each distinct text's phrase frequencies and token count, within one query)."""
    texts: dict[int, str] = {}
    for start in range(0, len(ids), 500):
        part = ids[start:start + 500]
        marks = ",".join("?" * len(part))
        for chunk_id, text in conn.execute(
                f"SELECT id, text FROM chunks WHERE id IN ({marks})", part):
            texts[int(chunk_id)] = str(text)
    if len(texts) != len(ids):
        return None
    out: dict[int, float] = {}
    scores: dict[str, float] = {}  # a repeated text's score, computed once
    for chunk_id in ids:
        text = texts[chunk_id]
        if text in scores:
            out[chunk_id] = scores[text]
            continue
        known = memo.get(text)
        if known is None:
            freq = [0.0] * len(tokens)
            size = 0
            for column, part_text in enumerate(keyword_columns(text)):
                if not part_text:
                    continue
                found = tokenizer(part_text.encode("utf-8"), apsw.FTS5_TOKENIZE_DOCUMENT, None,
                                  include_offsets=False, include_colocated=False)
                size += len(found)
                counts = Counter(found)
                for i, token in enumerate(tokens):
                    for _ in range(counts.get(token, 0)):
                        freq[i] += weights[column]  # one instance at a time, as FTS5 adds
            known = memo[text] = (freq, size)
        freq, size = known
        d = float(size)
        score = 0.0
        for i in range(len(tokens)):
            score += idf[i] * ((freq[i] * (K1 + 1.0)) / (freq[i] + K1 * (1 - B + B * d / avgdl)))
        out[chunk_id] = scores[text] = -1.0 * score
    return out
