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

import contextlib
import json
import mmap
import os
import struct
import tempfile
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

import apsw
import numpy as np

from .store_cache import chunk_log

SUFFIX = ".keywords"
MAGIC = b"GGUFEMBED-KWDS\x00\x01"
HEADER = struct.Struct("<16sQ")  # magic, length of the JSON header that follows
NO_ROW = np.uint32(0xFFFFFFFF)
MAX_ROWID = 16_000_000  # sizes are kept per rowid: past this, no file (FTS5 alone)
DENSE_SHARE = 5  # dense when 5 bytes a row (rowid + code) cost more than 1 a rowid
DIR_COLS = 8  # count, dense, codes offset, codes length, code bytes, rows offset, pairs
#               offset, pairs length


@dataclass(frozen=True)
class State:
    epoch: str
    inserted: int
    deleted: int


@dataclass(frozen=True)
class Phrase:
    """One token's rows: ``rows`` (ascending int32, None when dense) with ``codes`` (one per
    row, or one per rowid when dense, 0 there = absent) into ``pairs`` ((text, CJK) instance
    counts; ``pairs[0]`` is (0, 0))."""

    count: int
    rows: np.ndarray | None
    codes: np.ndarray
    pairs: np.ndarray  # int64 [m, 2]

    @property
    def nbytes(self) -> int:
        return sum(int(a.nbytes) for a in (self.rows, self.codes, self.pairs) if a is not None)


@dataclass(frozen=True)
class Stats:
    state: State
    sizes: np.ndarray  # uint32 per rowid
    phrases: Mapping[str, Phrase]
    checks: dict[str, int]  # each phrase's checksum (checked once, when first used)


def cache_path(db: str | Path) -> Path:
    return Path(str(db) + SUFFIX)


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


def _instances_fn(api: apsw.FTS5ExtensionApi, *args: Any) -> int:
    """Phrase 0's instances in the text column * 2^32 + those in the CJK column."""
    return (len(api.phrase_column_offsets(0, 0)) << 32) + len(api.phrase_column_offsets(0, 1))


def read_recent(conn: apsw.Connection, token: str, start: int) -> tuple[
        np.ndarray, np.ndarray, np.ndarray]:
    """(rows, text counts, CJK counts) of ``token`` in rows >= ``start`` only (FTS5 seeks to
    ``start``; an instance table would read every row): a refresh after a few writes."""
    conn.register_fts5_function("gguf_embed_instances", _instances_fn)
    quoted = '"' + token.replace('"', '""') + '"'
    found = conn.execute("SELECT rowid, gguf_embed_instances(fts_chunks) FROM fts_chunks "
                         "WHERE fts_chunks MATCH ? AND rowid >= ? ORDER BY rowid",
                         (quoted, start)).fetchall()
    both = np.array(found, dtype=np.int64).reshape(-1, 2)
    return both[:, 0].copy(), both[:, 1] >> 32, both[:, 1] & 0xFFFFFFFF


def live_rows(conn: apsw.Connection) -> np.ndarray:
    """Every FTS rowid, ascending."""
    (joined,) = conn.execute("SELECT group_concat(id) FROM "
                             "(SELECT id FROM fts_chunks_docsize ORDER BY id)").fetchone() \
        or (None,)
    return (np.fromstring(str(joined), dtype=np.int64, sep=",") if joined
            else np.empty(0, dtype=np.int64))


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
    phrases: dict[str, Phrase] = {}
    for token, p in old.phrases.items():
        rows = np.flatnonzero(p.codes) if p.rows is None else p.rows.astype(np.int64)
        codes = p.codes[rows] if p.rows is None else p.codes
        keep = (rows < cutoff) & alive[np.minimum(rows, len(alive) - 1)]
        pairs = np.asarray(p.pairs, dtype=np.int64)
        counts = pairs[codes[keep].astype(np.int64)]
        new_rows, new_text, new_cjk = read_recent(conn, token, cutoff)
        all_rows = np.concatenate([rows[keep], new_rows])
        if len(all_rows):
            phrases[token] = make_phrase(all_rows, np.concatenate([counts[:, 0], new_text]),
                                         np.concatenate([counts[:, 1], new_cjk]), end, pairs)
    return Stats(state, sizes, phrases, {})


# ---------------------------------------------------------------- the file beside the index
def _check(arrays: Iterable[np.ndarray]) -> int:
    """A cheap checksum: wrapping sums of each array's bytes as 64-bit words (the last
    few bytes as one more), and its length."""
    total = 0
    with np.errstate(over="ignore"):
        for a in arrays:
            raw = np.ascontiguousarray(a).reshape(-1).view(np.uint8)
            whole = len(raw) - len(raw) % 8
            total += int(np.add.reduce(raw[:whole].view("<u8"), dtype=np.uint64))
            total += int.from_bytes(raw[whole:].tobytes(), "little") + len(raw)
    return total % 2**64


def phrase_check(p: Phrase) -> int:
    return _check([a for a in (p.rows, p.codes, p.pairs) if a is not None])


def save(stats: Stats, path: Path) -> bool:
    """Write ``stats`` crash-safely (temporary file, fsync, rename); False when the folder
    cannot be written."""
    tokens = list(stats.phrases)
    names = "\n".join(tokens).encode("utf-8")
    directory = np.zeros((len(tokens), DIR_COLS), dtype="<i8")
    parts: list[bytes] = []
    offset = 0

    def put(data: bytes) -> int:
        nonlocal offset
        start = offset
        parts.append(data)
        pad = (-len(data)) % 8
        parts.append(b"\x00" * pad)
        offset += len(data) + pad
        return start

    sizes_at = put(np.ascontiguousarray(stats.sizes, dtype="<u4").tobytes())
    checks = []
    for i, token in enumerate(tokens):
        p = stats.phrases[token]
        codes_at = put(p.codes.tobytes())
        rows_at = -1 if p.rows is None else put(np.ascontiguousarray(p.rows, "<i4").tobytes())
        pairs_at = put(np.ascontiguousarray(p.pairs, "<i8").tobytes())
        directory[i] = (p.count, p.rows is None, codes_at, len(p.codes), p.codes.itemsize,
                        rows_at, pairs_at, len(p.pairs))
        checks.append(stats.checks.get(token) or phrase_check(p))
    names_at = put(names)
    checks_arr = np.array(checks, dtype=np.uint64)
    dir_at = put(directory.tobytes())
    checks_at = put(checks_arr.view("<i8").tobytes())
    header = json.dumps({
        "epoch": stats.state.epoch, "inserted": stats.state.inserted,
        "deleted": stats.state.deleted, "rows": len(stats.sizes), "tokens": len(tokens),
        "sizes": sizes_at, "names": [names_at, len(names)], "dir": dir_at, "checks": checks_at,
        "length": offset,
        "check": _check([stats.sizes.astype("<u4"), np.frombuffer(names, np.uint8),
                         directory, checks_arr]),
    }).encode()
    try:
        fd, tmp = tempfile.mkstemp(prefix=path.name + ".", suffix=".tmp", dir=path.parent)
    except OSError:
        return False
    try:
        with os.fdopen(fd, "wb") as out:
            head = HEADER.pack(MAGIC, len(header)) + header
            out.write(head + b"\x00" * ((-len(head)) % 8))
            for part in parts:
                out.write(part)
            out.flush()
            os.fsync(out.fileno())
        os.replace(tmp, path)
        with contextlib.suppress(OSError):
            dirfd = os.open(path.parent, os.O_RDONLY)
            try:
                os.fsync(dirfd)
            finally:
                os.close(dirfd)
    except OSError:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        return False
    return True


def load(path: Path) -> Stats | None:
    """The file at ``path`` memory-mapped, or None when it is missing or not in shape (its
    phrases' own checksums are checked when each is first used: store_keyword_cache)."""
    try:
        with open(path, "rb") as f:
            magic, size = HEADER.unpack(f.read(HEADER.size))
            if magic != MAGIC or size > 65536:
                return None
            info = json.loads(f.read(size))
            base = HEADER.size + size
            base += (-base) % 8
        if os.path.getsize(path) != base + int(info["length"]):
            return None
        return _mapped(path, info, base)
    except (OSError, ValueError, KeyError, TypeError, IndexError, OverflowError,
            UnicodeDecodeError, struct.error):
        return None


class _Phrases(Mapping[str, Phrase]):
    """The file's phrases, each made (as views of the mapped file) when first asked for: a
    one-shot search looks at a few of thousands.  A directory entry out of shape raises
    ValueError then."""

    def __init__(self, tokens: list[str], directory: np.ndarray, data: np.ndarray,
                 rows_n: int) -> None:
        self._index = {token: i for i, token in enumerate(tokens)}
        self._directory = directory
        self._data = data
        self._rows_n = rows_n
        self._made: dict[str, Phrase] = {}

    def __len__(self) -> int:
        return len(self._index)

    def __iter__(self) -> Iterator[str]:
        return iter(self._index)

    def __contains__(self, token: object) -> bool:
        return token in self._index

    def __getitem__(self, token: str) -> Phrase:
        made = self._made.get(token)
        if made is not None:
            return made
        row = self._directory[self._index[token]].tolist()
        count, dense, codes_at, codes_n, code_bytes, rows_at, pairs_at, pairs_n = row
        if code_bytes not in (1, 2, 4) or pairs_n < 1 or count < 0:
            raise ValueError(f"phrase {token!r}: out of shape")
        codes = _view(self._data, codes_at, codes_n, {1: "u1", 2: "<u2", 4: "<i4"}[code_bytes])
        pairs = _view(self._data, pairs_at, 2 * pairs_n, "<i8").reshape(pairs_n, 2)
        rows = None if dense else _view(self._data, rows_at, codes_n, "<i4")
        if (dense and codes_n > self._rows_n) or (not dense and codes_n != count):
            raise ValueError(f"phrase {token!r}: out of shape")
        made = self._made[token] = Phrase(int(count), rows, codes, pairs)
        return made


def _view(data: np.ndarray, start: int, count: int, dtype: str) -> np.ndarray:
    width = np.dtype(dtype).itemsize
    if start < 0 or count < 0 or start % 8 or start + count * width > len(data):
        raise ValueError("out of the file")
    return data[start:start + count * width].view(dtype)


def _mapped(path: Path, info: dict[str, Any], base: int) -> Stats | None:
    length = int(info["length"])
    data = np.empty(0, dtype=np.uint8)
    if length:  # a plain array over the map: slicing it costs nothing (np.memmap's does)
        with open(path, "rb") as f:
            whole = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)
        data = np.frombuffer(whole, dtype=np.uint8, count=length, offset=base)
    rows_n, tokens_n = int(info["rows"]), int(info["tokens"])
    if rows_n > MAX_ROWID:
        return None
    sizes = _view(data, int(info["sizes"]), rows_n, "<u4")
    names_at, names_len = (int(x) for x in info["names"])
    names = bytes(_view(data, names_at, names_len, "u1")).decode("utf-8")
    tokens = names.split("\n") if tokens_n else []
    directory = _view(data, int(info["dir"]), tokens_n * DIR_COLS, "<i8").reshape(
        tokens_n, DIR_COLS)
    checks = _view(data, int(info["checks"]), tokens_n, "<u8")
    if len(tokens) != tokens_n or len(set(tokens)) != tokens_n or int(info["check"]) != _check(
            [sizes, np.frombuffer(names.encode("utf-8"), np.uint8), directory, checks]):
        return None
    state = State(str(info["epoch"]), int(info["inserted"]), int(info["deleted"]))
    return Stats(state, sizes, _Phrases(tokens, directory, data, rows_n),
                 dict(zip(tokens, checks.tolist(), strict=True)))
