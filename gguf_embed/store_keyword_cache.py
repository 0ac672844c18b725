"""Keyword search's top k with the common words' BM25 shares computed from ``INDEX.keywords``
(issue 21): a fresh process (a one-shot CLI search, a server's first queries) ranks a query
of common words in milliseconds, exactly as FTS5's ``ORDER BY bm25(...) LIMIT k`` does.

The file (store_keyword_stats.py) holds every row's size D and, for each token in
``MIN_ROWS`` rows or more, its rows and per-row instance counts: the inputs of
``fts5Bm25Function`` that do not change when the index does.  At search time the rest comes
from FTS5 itself in the search's read transaction (row count, total tokens), each share is
computed in numpy in fts5Bm25Function's order of operations (so bit for bit), the rarer
phrases' shares are read from FTS5 (store_keyword_postings), and the sum is ranked there.

It is a cache derived from the SQLite file, with vector_cache's discipline: it is used only
when its ``chunk_log`` state is the one the search's transaction sees; every writer
(``index``, ``watch``, ``remove``, ``merge``: index_write.refresh_search_cache) brings it up to
date after its writes, incrementally or by a rebuild,
written to a temporary file, fsynced and renamed; a damaged, stale or foreign file is
ignored (and rewritten by the next run); a folder that cannot be written keeps it in the
writing process's memory only.  Deleting ``INDEX.keywords`` is always safe.  And it is never
trusted with what it returns: every row of the top k is scored again by FTS5 (the full
query, that row alone), and a single difference (a chunk that does not match, or was
deleted, a score that is not FTS5's) drops the file for this process and the search takes
the other paths.
"""

from __future__ import annotations

import contextlib
import math
import os
import threading
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import apsw
import numpy as np

from . import store_keyword_file as kfile
from . import store_keyword_postings as keyword_postings
from . import store_keyword_rank as keyword_rank
from . import store_keyword_topk as keyword_topk
from .store import connect
from .store_cache import chunk_log

MIN_ROWS = 2_000  # tokens in this many rows or more go in the file (~3 ms each from FTS5)
RARE_ROWS = 50_000  # a query's other phrases are read from FTS5 up to this many rows
TABLE_SIZES = 1 << 16  # rows of up to this many tokens: shares from a (count, size) table
MAX_COUNT = 100_000  # instances of one token in one row (the file says more: damaged)
MAX_INSTANCES = 1_000_000  # summed over a token's distinct counts: f is added up one by one
K1 = keyword_rank.K1
B = keyword_rank.B

_lock = threading.Lock()


class _Held:
    """What a process derives from one file once: the phrases checked, the row sizes as
    table indexes (0 where there is no row)."""

    def __init__(self, stats: kfile.Stats, checked: set[str] | None = None) -> None:
        self.checked = checked or set()
        sizes = np.asarray(stats.sizes)
        present = sizes != kfile.NO_ROW
        self.max_size = int(sizes[present].max()) if bool(present.any()) else 0
        self.sizes = np.where(present, sizes, 0).astype(np.int32) \
            if self.max_size < TABLE_SIZES else None


# realpath of the index -> (the file's (inode, mtime, size), its stats, what is derived)
_loaded: dict[str, tuple[Any, kfile.Stats, _Held]] = {}


def _file_key(path: Path) -> Any:
    try:
        st = os.stat(path)
    except OSError:
        return None
    return (st.st_ino, st.st_mtime_ns, st.st_size)


def _current(db: str | Path, state: tuple[str, int, int]) -> tuple[kfile.Stats, _Held] | None:
    """The stats of this index at ``state`` (the file's, loaded once per change of the
    file, or the writer's own in memory), else None."""
    real = os.path.realpath(db)
    path = kfile.cache_path(real)
    key = _file_key(path)
    with _lock:
        held = _loaded.get(real)
        if held is not None and held[0] is not None and held[0] != key:
            held = None  # the file changed since (another process's run)
    if held is None and key is not None:
        stats = kfile.load(path)
        if stats is not None:
            held = (key, stats, _Held(stats))
            with _lock:
                _loaded[real] = held
    if held is None:
        return None
    st = held[1].state
    if (st.epoch, st.inserted, st.deleted) != tuple(state):
        return None
    return held[1], held[2]


def _drop(db: str | Path) -> None:
    with _lock:
        _loaded.pop(os.path.realpath(db), None)


def forget() -> None:
    """Drop every file held (tests)."""
    with _lock:
        _loaded.clear()
        _misses.clear()


_misses: dict[str, int] = {}  # searches that found no usable file, per index
_workers: dict[str, threading.Thread] = {}


def _missed(db: str | Path) -> None:
    """A search found no file of its state.  The second time in a process (a long-running
    one: a one-shot search never pays for this), bring it up to date in a background thread,
    on a connection of its own (a writer that did not: an older version, a build that
    failed; or a folder only this process reads, where it is kept in memory)."""
    real = os.path.realpath(db)
    with _lock:
        _misses[real] = _misses.get(real, 0) + 1
        if _misses[real] < 2 or real in _workers:
            return
        worker = _workers[real] = threading.Thread(target=_background, args=(real,),
                                                   name="gguf-embed keyword statistics",
                                                   daemon=True)
    worker.start()


def _background(real: str) -> None:
    with contextlib.suppress(OSError, AttributeError):  # Linux: this thread only
        os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), 10)
    try:
        conn = connect(real, readonly=True)
        try:
            with conn:
                update(conn, real)
        finally:
            conn.close()
    except Exception:  # the file went or changed shape: the searches will say so
        pass
    finally:
        with _lock:
            _workers.pop(real, None)
            _misses.pop(real, None)


def wait(timeout: float | None = None) -> bool:
    """Until the background updates are done (tests, benchmarks); False on timeout."""
    with _lock:
        workers = list(_workers.values())
    for worker in workers:
        worker.join(timeout)
    return not any(w.is_alive() for w in workers)


def _valid(stats: kfile.Stats, token: str, p: kfile.Phrase) -> bool:
    """What the file says of one token can be used without going out of bounds; its
    checksum is the one written (a damaged file).  A file written to lie passes this: the
    scores FTS5 gives the rows returned catch it."""
    size = len(stats.sizes)
    pairs = np.asarray(p.pairs)
    if pairs.ndim != 2 or len(pairs) < 1 or pairs[0, 0] != 0 or pairs[0, 1] != 0:
        return False
    if bool((pairs < 0).any()) or int(pairs.sum(axis=1).max()) > MAX_COUNT \
            or int(pairs.sum()) > MAX_INSTANCES:
        return False
    if len(p.codes) and int(p.codes.max()) >= len(pairs):
        return False
    if p.rows is None:
        if len(p.codes) > size or int(np.count_nonzero(p.codes)) != p.count:
            return False
        present = p.codes != 0
        sizes = stats.sizes[:len(p.codes)][present]
    else:
        rows = p.rows
        if len(rows) != p.count or len(p.codes) != len(rows):
            return False
        if len(rows) and (int(rows[0]) < 0 or int(rows[-1]) >= size
                          or not bool(np.all(rows[1:] > rows[:-1]))):
            return False
        if len(p.codes) and int(p.codes.min()) < 1:
            return False
        sizes = stats.sizes[rows]
    if bool((sizes == kfile.NO_ROW).any()):
        return False
    checks = stats.checks.get(token)
    return checks is None or checks == kfile.phrase_check(p)


def _freqs(p: kfile.Phrase, weights: tuple[float, float]) -> np.ndarray:
    """f of each (text, CJK) pair: the weights added one instance at a time, text first."""
    freq = []
    for text, cjk in np.asarray(p.pairs).tolist():
        f = 0.0
        for _ in range(text):
            f += weights[0]
        for _ in range(cjk):
            f += weights[1]
        freq.append(f)
    return np.array(freq, dtype=np.float64)


def topk(conn: apsw.Connection, db: str | Path, key: tuple[str, Any], terms: Sequence[str],
         k: int, weights: tuple[float, float]) -> list[tuple[int, float]] | None:
    """(rowid, bm25) of the ``k`` best rows for the OR of ``terms``, exactly as FTS5's
    ``ORDER BY bm25(fts_chunks, *weights) LIMIT k``; None when the file is missing or stale,
    a phrase is neither in it nor rare, or FTS5 disagrees with a row (the caller's other
    paths answer).  Call inside the read transaction whose state ``key`` names."""
    state = key[1]
    if not terms or k < 1:
        return None
    held = _current(db, (state.epoch, state.inserted, state.deleted))
    if held is None:
        _missed(db)
        return None
    stats, derived = held
    checked = derived.checked
    tokenizer = keyword_topk.table_tokenizer(conn)
    tokens = keyword_topk.single_tokens(tokenizer, terms)
    if tokens is None:
        return None
    try:
        cached = {i: stats.phrases[t] for i, t in enumerate(tokens) if t in stats.phrases}
        if not cached:
            return None  # nothing common: the postings and FTS5 paths are as fast
        for i, p in cached.items():
            if tokens[i] not in checked:
                if not _valid(stats, tokens[i], p):
                    raise ValueError(f"phrase {tokens[i]!r}: out of shape")
                checked.add(tokens[i])
    except (ValueError, IndexError, OverflowError):  # a damaged (or forged) file
        _drop(db)
        return None
    rare = [terms[i] for i in range(len(terms)) if i not in cached]
    counts = dict(zip(rare, keyword_topk._doc_counts(conn, key, rare), strict=True))
    if any(n > RARE_ROWS for n in counts.values()):
        return None
    try:
        conn.register_fts5_function("gguf_embed_bm25_stats", keyword_topk._stats_fn)
    except apsw.Error:
        return None
    present = next(i for i in cached if cached[i].count > 0) if any(
        p.count > 0 for p in cached.values()) else None
    if present is None:
        return None
    row = conn.execute("SELECT gguf_embed_bm25_stats(fts_chunks) FROM fts_chunks "
                       "WHERE fts_chunks MATCH ? LIMIT 1",
                       (keyword_topk._phrase(terms[present]),)).fetchone()
    if row is None:
        return None  # the file lies about this token
    n_row, n_token = (int(x) for x in str(row[0]).split())
    avgdl = float(n_token) / float(n_row)
    phrases: list[Any] = []
    idfs: list[float] = []
    kd = None
    if derived.sizes is not None:
        kd = K1 * ((1 - B) + (B * np.arange(derived.max_size + 1, dtype=np.float64)) / avgdl)
    for i, term in enumerate(terms):
        one = cached.get(i)
        n_hit = counts[term] if one is None else one.count
        value = math.log((n_row - n_hit + 0.5) / (n_hit + 0.5))
        idfs.append(1e-6 if value <= 0.0 else value)
        if one is None:
            postings = keyword_postings.held(key, [term], weights)
            phrases.append(postings[0] if postings else keyword_postings._read(
                conn, term, weights))
            continue
        phrases.append(keyword_rank.Shares(one, _freqs(one, weights), idfs[i], avgdl,
                                           stats.sizes, derived.sizes, kd))
    best = keyword_rank.best(phrases, n_row, k)
    if best is None or not _confirmed(conn, tokenizer, tokens, idfs, weights, avgdl, best):
        if best is not None:
            _drop(db)
        return None
    return best


def _confirmed(conn: apsw.Connection, tokenizer: Any, tokens: list[str], idf: list[float],
               weights: tuple[float, float], avgdl: float,
               best: list[tuple[int, float]]) -> bool:
    """Each of these rows is a chunk of this snapshot, and its score computed again from its
    text (store_keyword_topk._scores: the table's tokenizer, fts5Bm25Function's arithmetic)
    is the one found: a row that does not match the query would score 0.  (FTS5's own bm25
    of the query for a few rows costs ~0.2 ms a row: it seeks every phrase's doclist.)"""
    if not best:
        return True
    scores = keyword_topk._scores(conn, tokenizer, [rowid for rowid, _ in best], tokens, idf,
                                  weights, avgdl, {})
    return scores is not None and all(scores.get(rowid) == score for rowid, score in best)


def update(conn: apsw.Connection, db: str | Path, *, min_rows: int | None = None,
           before: Callable[[str], None] | None = None) -> bool:
    """Bring ``INDEX.keywords`` up to the state ``conn`` sees (call inside a read
    transaction, after a run's writes): refreshed from the file when it is of this index
    and older, else rebuilt; kept in this process's memory where the folder cannot be
    written.  False when the index is not covered (no chunk_log, rowids too far apart).
    ``before("refresh")`` / ``before("build")`` is called as that work starts (never when
    the file is already current): at a million chunks a build takes ~35 s."""
    from . import store_keyword_stats  # writers only: a search needs none of it

    real = os.path.realpath(db)
    path = kfile.cache_path(real)
    log = chunk_log(conn)
    if log is None:
        return False
    with _lock:
        held = _loaded.get(real)
    old = held[1] if held is not None and held[0] == _file_key(path) else kfile.load(path)
    if old is not None and (old.state.epoch, old.state.inserted, old.state.deleted) == log:
        return True
    new = None
    if old is not None and old.state.epoch == log[0]:
        try:
            if all(_valid(old, t, p) for t, p in old.phrases.items()):
                if before is not None:
                    before("refresh")
                new = store_keyword_stats.refresh(conn, old)
        except (ValueError, IndexError, OverflowError, apsw.Error):
            new = None
    if new is None:
        if before is not None:
            before("build")
        try:  # a cache: whatever goes wrong here, the run that wrote the index stands
            new = store_keyword_stats.build(conn, MIN_ROWS if min_rows is None else min_rows)
        except (ValueError, IndexError, OverflowError, apsw.Error):
            new = None
    if new is None:
        return False
    if kfile.save(new, path):
        loaded = kfile.load(path)  # mapped: the pages stay the kernel's to drop
        if loaded is not None:
            new = loaded
        key = _file_key(path)
    else:
        key = None  # in memory only
    with _lock:
        _loaded[real] = (key, new, _Held(new, set(new.phrases)))
    return True
