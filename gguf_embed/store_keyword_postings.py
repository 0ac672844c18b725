"""Keyword search's top k from each phrase's BM25 share, held in memory (issue 21).

FTS5's ``bm25()`` of an OR query is ``-1 * sum(term_i)`` over the query's phrases, in query
order, where ``term_i`` depends only on phrase i (its IDF, its weighted count in the row) and
the row's size; a phrase that is not in the row adds exactly 0.0.  A query for phrase i *alone*
returns ``-1 * (0.0 + term_i)`` for every row holding it, computed by FTS5 itself from the same
inputs (same IDF, row count, average size, row size, column weights), so ``term_i`` bit for bit.
Kept per index state as sorted (rowid, term_i) arrays, one per phrase, those "postings" give
any query over known phrases in numpy: add the phrases' shares into one array in query order
(the sum FTS5 does, the same roundings) and keep the k best, ties by rowid as SQLite's sort
gives them.  No score differs from FTS5's; see tests/test_keyword_postings.py.

Reading a phrase's postings costs what scoring its matches costs FTS5 (~1.5 µs a row): a
phrase in most of 10^6 chunks takes ~1.5 s, which a one-shot search must not pay for a
structure it then throws away.  So the missing phrases of a query are read at once only when
they are cheap (``CHEAP_ROWS`` rows together, at most ``FIRST_ROWS`` of them for phrases not
searched for before: a one-shot search of rare words pays ~30 ms more at most, where FTS5's own
query takes about as long); otherwise those this process has searched for before in this
index (the common words of a long-running server's queries) are read by a
background thread, on a connection of its own, and this query takes the other paths
(store_keyword_topk, then FTS5's own query).  Memory: 4 bytes a row per phrase held for the
rowid, and 2 for its share (an index into the phrase's distinct shares: a share depends only on
the row's size and the phrase's count in it) or 8 where there are too many distinct ones; at
most ``MAX_BYTES`` in all.  Reads a query asks for push out the least recently used phrases;
background reads only fill free room, so a working set larger than that never thrashes.
"""

from __future__ import annotations

import contextlib
import itertools
import os
import threading
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import apsw
import numpy as np

from . import store_keyword_topk as keyword_topk
from .store import connect
from .store_cache import chunk_log

CHEAP_ROWS = 100_000  # rows read at once for a query (~0.15 s), all its missing phrases together
FIRST_ROWS = 20_000  # ... of which phrases this process had not searched for before (~30 ms)
MAX_BYTES = 256 * 2**20  # held in all, every phrase and index together
MAX_SEEN = 100_000  # phrases remembered as seen, per index
MAX_CODES = 2**16  # distinct shares a phrase may have to be kept as uint16 codes
MAX_DENSE = 16_000_000  # the scores are summed in an array indexed by rowid (8 bytes each)

_lock = threading.Lock()


@dataclass(frozen=True)
class Postings:
    """One phrase at one index state: its rows and each row's ``term_i``.  Sparse: ``rows``
    (ascending) with ``codes`` (uint16 indexes into ``values``, or None: ``values`` per row).
    Dense, for a phrase in over a third of the rowids: ``rows`` None, ``codes`` one per rowid
    up to its last row, 0 where the phrase is absent (``values[0]`` is 0.0)."""

    rows: np.ndarray | None  # int32 (int64 for rowids past 2^31)
    codes: np.ndarray | None
    values: np.ndarray  # float64

    @property
    def nbytes(self) -> int:
        return sum(int(a.nbytes) for a in (self.rows, self.codes, self.values) if a is not None)

    @property
    def end(self) -> int:
        """1 + the last rowid (0: no rows)."""
        if self.rows is None:
            return len(self.codes) if self.codes is not None else 0
        return int(self.rows[-1]) + 1 if len(self.rows) else 0

    @property
    def count(self) -> int:
        """How many rows hold the phrase."""
        if self.rows is not None:
            return len(self.rows)
        return 0 if self.codes is None else int(np.count_nonzero(self.codes))

    def add_to(self, total: np.ndarray) -> None:
        """``total[row] += term_i`` for each row (adding 0.0 elsewhere changes nothing)."""
        if self.rows is None:
            if self.codes is not None:
                total[:len(self.codes)] += self.values[self.codes]
        elif self.codes is None:
            total[self.rows] += self.values  # rowids are distinct within a phrase
        else:
            total[self.rows] += self.values[self.codes]


# (index path, (index state, weights), phrase) -> its postings
_held: OrderedDict[tuple[str, Any, str], Postings] = OrderedDict()
_bytes_held = 0
_seen: dict[str, set[str]] = {}  # per index path, whatever its state: this process's words
_pending: OrderedDict[tuple[str, Any, str], tuple[Any, tuple[float, float], int]] = OrderedDict()
_worker: threading.Thread | None = None
_idle = threading.Condition(_lock)


def forget() -> None:
    """Drop everything held and every read not started (tests; an index closed for good)."""
    global _bytes_held
    with _lock:
        _held.clear()
        _seen.clear()
        _pending.clear()
        _bytes_held = 0


def wait(timeout: float | None = None) -> bool:
    """Until the background reads are done (tests, benchmarks); False on timeout."""
    with _idle:
        return _idle.wait_for(lambda: _worker is None, timeout)


def _schedule(cache_key: tuple[str, Any], weights: tuple[float, float],
              terms: dict[str, int]) -> None:
    """Read these phrases (with their row counts) in a thread of their own, with its own
    connection."""
    global _worker
    if not terms:
        return
    path, state = cache_key[0], (cache_key[1], weights)
    with _lock:
        for term, rows in terms.items():
            _pending.setdefault((path, state, term), (cache_key[1], weights, rows))
        if _worker is None:
            _worker = threading.Thread(target=_work, name="gguf-embed keyword postings",
                                       daemon=True)
            _worker.start()


def _work() -> None:
    global _worker
    with contextlib.suppress(OSError, AttributeError):  # Linux: this thread only
        os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), 10)
    conns: dict[str, apsw.Connection] = {}
    try:
        while True:
            with _lock:
                if not _pending:
                    _worker = None
                    _idle.notify_all()
                    return
                key, (index_state, weights, rows) = _pending.popitem(last=False)
                if key in _held or _bytes_held + 6 * rows > MAX_BYTES:
                    continue  # held already, or no free room: never worth the read
            path, state, term = key
            try:
                conn = conns.get(path)
                if conn is None:
                    conn = conns[path] = connect(path, readonly=True)
                with conn:  # one snapshot: read only if it is the state the key names
                    row = chunk_log(conn)
                    if row is None or type(index_state)(*row) != index_state:
                        continue
                    found = _read(conn, term, weights)
            except Exception:  # the file went or changed shape: the foreground will say so
                continue
            with _lock:
                if any(k[0] == path and k[1] != state for k in _held):
                    continue  # a newer state is in use: this one is gone for good
                _hold(key, found, evict=False)
    finally:
        for conn in conns.values():
            conn.close()
        with _lock:
            if _worker is threading.current_thread():
                _worker = None
            _idle.notify_all()


def remember(cache_key: tuple[str, Any], terms: Sequence[str],
             weights: tuple[float, float]) -> None:
    """A query answered from INDEX.keywords (store_keyword_cache): its phrases count as seen,
    and those seen before and not held are read in the background, as :func:`topk` would,
    so that a long-running process's hybrid search can sum them beside its vector half."""
    path, state = cache_key[0], (cache_key[1], weights)
    with _lock:
        seen = _seen.setdefault(path, set())
        again = {t: 0 for t in dict.fromkeys(terms)
                 if t in seen and (path, state, t) not in _held}
        if len(seen) > MAX_SEEN:
            seen.clear()
        seen.update(terms)
    _schedule(cache_key, weights, again)


def held(cache_key: tuple[str, Any], terms: Sequence[str],
         weights: tuple[float, float]) -> list[Postings] | None:
    """Every phrase's postings in query order when all are held (no SQL: the caller can sum
    them with :func:`best` while its connection does other work), else None."""
    path, state = cache_key[0], (cache_key[1], weights)
    with _lock:
        keys = [(path, state, term) for term in terms]
        if not terms or not all(key in _held for key in keys):
            return None
        for key in keys:
            _held.move_to_end(key)
        return [_held[key] for key in keys]


def topk(conn: apsw.Connection, cache_key: tuple[str, Any], terms: Sequence[str], k: int,
         weights: tuple[float, float]) -> list[tuple[int, float]] | None:
    """(rowid, bm25) of the ``k`` best rows of ``fts_chunks`` for the OR of ``terms``, exactly
    as ``ORDER BY bm25(fts_chunks, *weights) LIMIT k`` returns them; or None while some phrase
    is neither held nor worth reading yet.  Call inside one read transaction, with
    ``cache_key`` naming the index state it sees."""
    if not terms or k < 1:
        return None
    path, state = cache_key[0], (cache_key[1], weights)
    shares: dict[str, Postings] = {}
    missing: list[str] = []
    with _lock:
        _drop_other_states(path, state)
        seen = _seen.setdefault(path, set())
        for term in dict.fromkeys(terms):
            found = _held.get((path, state, term))
            if found is None:
                missing.append(term)
            else:
                _held.move_to_end((path, state, term))
                shares[term] = found
        before = {term: term in seen for term in missing}
        if len(seen) > MAX_SEEN:
            seen.clear()
        seen.update(terms)
    if missing:
        counts = keyword_topk._doc_counts(conn, cache_key, missing)
        first = sum(n for t, n in zip(missing, counts, strict=True) if not before[t])
        if sum(counts) > CHEAP_ROWS or first > FIRST_ROWS:
            # a one-shot search never sees a phrase twice: only a long-running process, whose
            # next queries will find it held, reads the others (in the background)
            _schedule(cache_key, weights, {t: n for t, n in zip(missing, counts, strict=True)
                                           if before[t]})
            return None
        for term in missing:
            shares[term] = _read(conn, term, weights)
        with _lock:
            for term in missing:
                _hold((path, state, term), shares[term])
    return best([shares[term] for term in terms], k)


def _read(conn: apsw.Connection, term: str, weights: tuple[float, float]) -> Postings:
    """Rowids (ascending) and ``term_i`` of every row holding the phrase ``term``, from FTS5's
    bm25 of the phrase alone."""
    bm25 = f"bm25(fts_chunks, {weights[0]!r}, {weights[1]!r})"
    cursor = conn.execute(f"SELECT rowid, {bm25} FROM fts_chunks WHERE fts_chunks MATCH ?",
                          (keyword_topk._phrase(term),))
    flat = np.fromiter(itertools.chain.from_iterable(cursor), dtype=np.float64)
    pairs = flat.reshape(-1, 2)
    rows = pairs[:, 0].astype(np.int64)
    share = -pairs[:, 1]  # bm25 = -1 * (0.0 + term_i): negating gives term_i exactly
    if len(rows) > 1 and not bool(np.all(rows[1:] > rows[:-1])):
        order = np.argsort(rows, kind="stable")
        rows, share = rows[order], share[order]
    if len(rows) and rows[-1] < 2**31:
        rows = rows.astype(np.int32)
    values, codes = np.unique(share, return_inverse=True)  # exact values, none rounded
    if len(values) >= MAX_CODES:
        return Postings(rows, None, np.ascontiguousarray(share))
    end = int(rows[-1]) + 1 if len(rows) else 0
    if 3 * len(rows) > end:  # dense codes are smaller (2 bytes a rowid, not 6 a row)
        dense = np.zeros(end, dtype=np.uint16)
        dense[rows] = codes + 1
        return Postings(None, dense, np.concatenate(([0.0], values)))
    return Postings(rows, codes.astype(np.uint16), values)


def best(phrases: list[Postings], k: int) -> list[tuple[int, float]] | None:
    """(rowid, bm25) of the ``k`` best rows for these phrases' OR, as FTS5 ranks them; None
    where the rowids are too far apart to sum in one array."""
    size = max((p.end for p in phrases), default=0)
    if size == 0:
        return []
    if size > MAX_DENSE:
        return None  # rowids far apart (not made by SQLite's max + 1): FTS5's query
    total = np.zeros(size, dtype=np.float64)
    for phrase in phrases:  # query order: FTS5's sum, with the same roundings
        phrase.add_to(total)
    hit = np.flatnonzero(total)  # every share is > 0: these are the rows that match
    scores = total[hit]
    if len(hit) > k:
        kth = np.partition(scores, len(scores) - k)[len(scores) - k]
        keep = scores >= kth
        hit, scores = hit[keep], scores[keep]
    order = np.lexsort((hit, -scores))[:k]  # best first, ties by rowid
    return [(int(hit[i]), -1.0 * float(scores[i])) for i in order]


def _drop_other_states(path: str, state: Any) -> None:
    """What was held for another state of this index can never be used again."""
    global _bytes_held
    for key in [key for key in _held if key[0] == path and key[1] != state]:
        _bytes_held -= _held.pop(key).nbytes


def _hold(key: tuple[str, Any, str], value: Postings, *, evict: bool = True) -> None:
    """Keep ``value``; ``evict``: make room by dropping the least recently used phrases
    (else it is kept only if it fits)."""
    global _bytes_held
    if key in _held or (not evict and _bytes_held + value.nbytes > MAX_BYTES):
        return
    _held[key] = value
    _bytes_held += value.nbytes
    while _bytes_held > MAX_BYTES and len(_held) > 1:
        _bytes_held -= _held.popitem(last=False)[1].nbytes
