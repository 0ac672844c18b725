"""The raw BM25 ingredients of the index's common words, read from FTS5 and kept in a file
beside the index, ``INDEX.keywords`` (issue 21; read by store_keyword_cache.py).

FTS5's bm25 share of phrase i in a row (``fts5Bm25Function``) is
``idf_i * (f * (k1 + 1)) / (f + k1 * (1 - b + b * D / avgdl))``: ``idf_i`` and ``avgdl``
depend on the whole index (they change with every write), but ``D`` (the row's tokens over
both columns, ``xColumnSize(-1)``) and ``f`` (the column weights added once per instance of
the phrase in the row, text column first) depend on the row alone.  This file keeps those,
so a common word's shares (hundreds of thousands of rows, ~1.5 µs a row through FTS5) are a
few numpy passes at any later state:

* ``sizes``: D of every row, by rowid (``NO_ROW`` where there is none), decoded from the
  ``fts_chunks_docsize`` shadow table (FTS5's own record: two varints a row);
* per common token (in ``min_rows`` rows or more, found through an ``fts5vocab`` row table),
  its rows and, per row, a code into the token's distinct (text count, CJK count) pairs,
  read from an ``fts5vocab`` instance table in one ``group_concat`` (no Python per row) and
  checked against FTS5's own ``count(*)`` of the token.  A token in over a fifth of the rowids
  is stored dense: one code per rowid, 0 where it is absent.

Nothing here is trusted at search time beyond what it can be checked for: store_keyword_cache
checks the file's shape, its checksums and state, and FTS5's own score of every row it returns.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from typing import Any, cast

import apsw
import numpy as np

from . import store_keyword_topk as keyword_topk
from .keywords import keyword_columns
from .store_cache import chunk_log
from .store_keyword_file import (
    MAX_ROWID,
    NO_ROW,
    Phrase,
    State,
    Stats,
    cache_path,
    load,
    phrase_check,
    save,
)

__all__ = ["MAX_ROWID", "NO_ROW", "Phrase", "State", "Stats", "build", "cache_path", "load",
           "phrase_check", "refresh", "save"]
DENSE_SHARE = 5  # dense when 5 bytes a row (rowid + code) cost more than 1 a rowid


# ---------------------------------------------------------------- reading from FTS5
def _varints(blob: np.ndarray) -> np.ndarray | None:
    """SQLite varints (big-endian 7-bit groups) packed one after another, decoded; None
    where one is longer than 4 bytes (a row of over 2^28 tokens: not FTS5's docsize)."""
    ends = np.flatnonzero(blob < 0x80)
    if len(ends) == 0 or ends[-1] != len(blob) - 1:
        return None if len(blob) else np.empty(0, dtype=np.int64)
    starts = np.concatenate(([0], ends[:-1] + 1))
    lengths = ends - starts + 1
    if int(lengths.max()) > 4:
        return None
    values = np.zeros(len(ends), dtype=np.int64)
    for j in range(int(lengths.max())):
        more = lengths > j
        values[more] = (values[more] << 7) | (blob[starts[more] + j] & 0x7F)
    return values


def read_sizes(conn: apsw.Connection, start: int = 0) -> tuple[np.ndarray, np.ndarray] | None:
    """(rowids, D) of every FTS row with rowid >= ``start``, from ``fts_chunks_docsize``
    (two columns: two varints a row); None where its rows are not in that shape."""
    ids: list[int] = []
    blobs: list[bytes] = []
    for rowid, blob in conn.execute("SELECT id, sz FROM fts_chunks_docsize WHERE id >= ? "
                                    "ORDER BY id", (start,)):
        ids.append(cast(int, rowid))
        blobs.append(cast(bytes, blob))
    if not ids:
        return np.empty(0, dtype=np.int64), np.empty(0, dtype=np.int64)
    values = _varints(np.frombuffer(b"".join(blobs), dtype=np.uint8))
    if values is None or len(values) != 2 * len(ids):
        return None
    if any(len(b) > 8 for b in blobs):  # two varints of at most 4 bytes each
        return None
    return np.array(ids, dtype=np.int64), values[0::2] + values[1::2]


def common_tokens(conn: apsw.Connection, min_rows: int) -> list[str]:
    """Tokens in ``min_rows`` rows or more, most common first (a scan of FTS5's index)."""
    conn.execute("CREATE VIRTUAL TABLE IF NOT EXISTS temp.gguf_embed_vocab_row "
                 "USING fts5vocab(main, fts_chunks, row)")
    found = conn.execute("SELECT term, doc FROM temp.gguf_embed_vocab_row WHERE doc >= ?",
                         (min_rows,)).fetchall()
    return [str(term) for term, _ in sorted(found, key=lambda r: (-cast(int, r[1]), r[0]))]


def read_phrase(conn: apsw.Connection, token: str) -> tuple[
        np.ndarray, np.ndarray, np.ndarray] | None:
    """(rows, text counts, CJK counts) of ``token`` from the index's instances; None where
    they disagree with FTS5's own count of the token's rows."""
    conn.execute("CREATE VIRTUAL TABLE IF NOT EXISTS temp.gguf_embed_vocab_inst "
                 "USING fts5vocab(main, fts_chunks, instance)")
    # one value per instance: rowid * 2 + (1 in the CJK column), joined in C, in the
    # index's order (rowid, column, offset)
    (joined,) = conn.execute(
        "SELECT group_concat(doc * 2 + (col = 'cjk')) FROM temp.gguf_embed_vocab_inst "
        "WHERE term = ?", (token,)).fetchone() or (None,)
    values = (np.fromstring(str(joined), dtype=np.int64, sep=",") if joined
              else np.empty(0, dtype=np.int64))
    if len(values) > 1 and not bool(np.all(values[1:] >= values[:-1])):
        values = np.sort(values)
    starts = np.flatnonzero(np.concatenate(([True], values[1:] != values[:-1])))
    keys = values[starts]
    counts = np.diff(np.append(starts, len(values)))
    rowids = keys >> 1
    rows_at = np.flatnonzero(np.concatenate(([True], rowids[1:] != rowids[:-1])))
    rows = rowids[rows_at]
    where = np.cumsum(np.concatenate(([False], rowids[1:] != rowids[:-1])))
    text = np.zeros(len(rows), dtype=np.int64)
    cjk = np.zeros(len(rows), dtype=np.int64)
    is_cjk = (keys & 1).astype(bool)
    text[where[~is_cjk]] = counts[~is_cjk]
    cjk[where[is_cjk]] = counts[is_cjk]
    quoted = '"' + token.replace('"', '""') + '"'
    (total,) = conn.execute("SELECT count(*) FROM fts_chunks WHERE fts_chunks MATCH ?",
                            (quoted,)).fetchone() or (-1,)
    if int(cast(int, total)) != len(rows):
        return None
    return rows, text, cjk


def _codes(text: np.ndarray, cjk: np.ndarray,
           pairs: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """(pairs, codes): the distinct (text, cjk) pairs, (0, 0) first, and each row's index
    into them; ``pairs`` given: those kept in their order, new ones after."""
    if not len(text):
        return (np.zeros((1, 2), dtype=np.int64) if pairs is None else pairs,
                np.empty(0, dtype=np.int64))
    keys = (text << 32) | cjk
    known = np.zeros(1, dtype=np.int64) if pairs is None else (pairs[:, 0] << 32) | pairs[:, 1]
    if len(keys) > 4096 and int(text.max()) < 1024 and int(cjk.max()) < 2048:
        small = np.flatnonzero(np.bincount(text * 2048 + cjk))  # no sort: counts are small
        present = ((small // 2048) << 32) | (small % 2048)
    else:
        present = np.unique(keys)
    table = np.concatenate([known, np.setdiff1d(present, known)])
    order = np.argsort(table, kind="stable")
    codes = order[np.searchsorted(table[order], keys)]
    return np.stack([table >> 32, table & 0xFFFFFFFF], axis=1), codes


def make_phrase(rows: np.ndarray, text: np.ndarray, cjk: np.ndarray, end: int,
                pairs: np.ndarray | None = None) -> Phrase:
    """The stored form of one token's rows (``end``: 1 + the largest rowid of the index)."""
    pairs, codes = _codes(text.astype(np.int64), cjk.astype(np.int64), pairs)
    dtype = np.uint8 if len(pairs) <= 256 else np.uint16 if len(pairs) <= 65536 else None
    return _stored(rows, codes, pairs, dtype, end)


def _stored(rows: np.ndarray, codes: np.ndarray, pairs: np.ndarray, dtype: Any,
            end: int) -> Phrase:
    """A token's rows and codes in their stored form: codes of ``dtype`` (int32 where None,
    too many distinct pairs), dense by rowid up to ``end`` where the token is in more than
    1 / DENSE_SHARE of the rowids, else sparse."""
    if dtype is None:
        return Phrase(len(rows), rows.astype(np.int32), codes.astype(np.int32), pairs)
    if DENSE_SHARE * len(rows) > end:
        dense = np.zeros(end, dtype=dtype)
        dense[rows] = codes
        return Phrase(len(rows), None, dense, pairs)
    return Phrase(len(rows), rows.astype(np.int32), codes.astype(dtype), pairs)


def build(conn: apsw.Connection, min_rows: int, max_tokens: int = 100_000) -> Stats | None:
    """Every row's size and the common tokens' rows, read inside the caller's transaction;
    None for an index this does not cover (no chunk_log, rowids past ``MAX_ROWID``)."""
    log = chunk_log(conn)
    if log is None:
        return None
    got = read_sizes(conn)
    if got is None:
        return None
    ids, sizes = got
    end = int(ids[-1]) + 1 if len(ids) else 0
    if end > MAX_ROWID or (len(sizes) and int(sizes.max()) >= int(NO_ROW)):
        return None
    per_row = np.full(end, NO_ROW, dtype=np.uint32)
    per_row[ids] = sizes
    phrases: dict[str, Phrase] = {}
    for token in common_tokens(conn, min_rows)[:max_tokens]:
        found = read_phrase(conn, token)
        if found is not None and len(found[0]):
            phrases[token] = make_phrase(*found, end=end)
    return Stats(State(*log), per_row, phrases, {})


def read_recent(conn: apsw.Connection, start: int, ids: np.ndarray, sizes: np.ndarray,
                tokens: Iterable[str]) -> dict[str, tuple[np.ndarray, ...]] | None:
    """{token: (rows, text counts, CJK counts)} of ``tokens`` in rows >= ``start``, from the
    chunks' text through the table's own tokenizer, as FTS5 indexed it (a query per token
    costs ~1 ms of seeking at 10^6 rows, for thousands of tokens); None where a row's size
    (``ids``, ``sizes``: FTS5's own) or the rows themselves differ from what FTS5 holds."""
    wanted = set(tokens)
    tokenizer = keyword_topk.table_tokenizer(conn)
    found: dict[str, list[tuple[int, int, int]]] = {}
    seen: list[int] = []
    for rowid, text in conn.execute("SELECT id, text FROM chunks WHERE id >= ? ORDER BY id",
                                    (start,)):
        per: dict[str, list[int]] = {}
        size = 0
        for column, part in enumerate(keyword_columns(str(text))):
            if not part:
                continue
            got = cast(list[str], tokenizer(part.encode("utf-8"), apsw.FTS5_TOKENIZE_DOCUMENT,
                                            None, include_offsets=False,
                                            include_colocated=False))
            size += len(got)
            for token, n in Counter(got).items():
                if token in wanted:
                    per.setdefault(token, [0, 0])[column] += n
        at = len(seen)
        if at >= len(ids) or int(ids[at]) != int(cast(int, rowid)) or int(sizes[at]) != size:
            return None
        seen.append(int(cast(int, rowid)))
        for token, (text_n, cjk_n) in per.items():
            found.setdefault(token, []).append((int(cast(int, rowid)), text_n, cjk_n))
    if len(seen) != len(ids):
        return None
    out: dict[str, tuple[np.ndarray, ...]] = {}
    for token, triples in found.items():
        both = np.array(triples, dtype=np.int64).reshape(-1, 3)
        out[token] = (both[:, 0].copy(), both[:, 1].copy(), both[:, 2].copy())
    return out


def live_rows(conn: apsw.Connection) -> np.ndarray:
    """Every FTS rowid, ascending."""
    (joined,) = conn.execute("SELECT group_concat(id) FROM "
                             "(SELECT id FROM fts_chunks_docsize ORDER BY id)").fetchone() \
        or (None,)
    return (np.fromstring(str(joined), dtype=np.int64, sep=",") if joined
            else np.empty(0, dtype=np.int64))


def _refreshed(p: Phrase, cutoff: int, alive: np.ndarray | None, new_rows: np.ndarray,
               new_codes: np.ndarray, pairs: np.ndarray, end: int) -> Phrase:
    """``p``'s rows below ``cutoff`` (those ``alive``, where rows were deleted) and the new
    ones, with codes into ``pairs`` (``p.pairs`` with new pairs after): no row re-encoded."""
    wide = len(pairs) > 256
    if p.rows is None:
        old_codes = p.codes[:min(cutoff, len(p.codes))]
        if alive is not None:
            old_codes = np.where(alive[:len(old_codes)], old_codes, 0)
        count = int(np.count_nonzero(old_codes)) + len(new_rows)
        if DENSE_SHARE * count > end and len(pairs) <= 65536:
            dense = np.zeros(end, dtype=np.uint16 if wide else p.codes.dtype)
            dense[:len(old_codes)] = old_codes
            dense[new_rows] = new_codes
            return Phrase(count, None, dense, pairs)
        old_rows = np.flatnonzero(old_codes)
        old_codes = old_codes[old_rows]
    else:
        stop = int(np.searchsorted(p.rows, cutoff))
        old_rows, old_codes = p.rows[:stop], p.codes[:stop]
        if alive is not None:
            live = alive[old_rows]
            old_rows, old_codes = old_rows[live], old_codes[live]
    rows = np.concatenate([old_rows.astype(np.int64), new_rows])
    codes = np.concatenate([old_codes.astype(np.int64), new_codes])
    dtype = np.uint8 if not wide else np.uint16 if len(pairs) <= 65536 else None
    return _stored(rows, codes, pairs, dtype, end)


def refresh(conn: apsw.Connection, old: Stats, rebuild_share: float = 0.25) -> Stats | None:
    """``old`` brought up to the state the caller's transaction sees: rows deleted dropped,
    rows from the first new (or reused) rowid on re-read; None when a rebuild is due.

    As in vector_cache._refresh: SQLite gives a new row the largest rowid + 1, so a reused
    rowid is above every surviving older row; the inserts not seen as new rowids are that
    many of the highest rowids ``old`` shares with the file, and everything from the lowest
    of them (or of the new rowids) on is read again."""
    log = chunk_log(conn)
    if log is None:
        return None
    state = State(*log)
    if state.epoch != old.state.epoch or state.inserted < old.state.inserted \
            or state.deleted < old.state.deleted:
        return None
    live = live_rows(conn)
    end = int(live[-1]) + 1 if len(live) else 0
    if end > MAX_ROWID:
        return None
    old_end = len(old.sizes)
    known = np.zeros(len(live), dtype=bool)
    below = live < old_end
    known[below] = old.sizes[live[below]] != NO_ROW
    added = live[~known]
    unexplained = (state.inserted - old.state.inserted) - len(added)
    if unexplained < 0 or len(added) + unexplained > rebuild_share * max(len(live), 1):
        return None
    shared = live[known]
    cutoff = end
    if len(added):
        cutoff = int(added[0])
    if unexplained:
        cutoff = min(cutoff, int(shared[len(shared) - unexplained]))
    alive = np.zeros(max(end, old_end), dtype=bool)
    alive[live] = True
    sizes = np.full(end, NO_ROW, dtype=np.uint32)
    top = min(cutoff, old_end, end)
    sizes[:top] = np.where(alive[:top], old.sizes[:top], NO_ROW)
    got = read_sizes(conn, cutoff)
    if got is None or (len(got[1]) and int(got[1].max()) >= int(NO_ROW)):
        return None
    sizes[got[0]] = got[1]
    recent = read_recent(conn, cutoff, got[0], got[1], old.phrases)
    if recent is None:
        return None
    nothing = np.empty(0, dtype=np.int64)
    deletes = state.deleted != old.state.deleted
    phrases: dict[str, Phrase] = {}
    for token, p in old.phrases.items():
        new_rows, new_text, new_cjk = recent.get(token, (nothing, nothing, nothing))
        # the old codes keep their meaning: new pairs go after the old ones
        pairs, new_codes = _codes(new_text, new_cjk, np.asarray(p.pairs, dtype=np.int64))
        made = _refreshed(p, cutoff, alive if deletes else None, new_rows, new_codes,
                          pairs, end)
        if made.count:
            phrases[token] = made
    return Stats(state, sizes, phrases, {})
