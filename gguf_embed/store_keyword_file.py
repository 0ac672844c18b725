"""The file ``INDEX.keywords`` (issue 21): what store_keyword_stats.py reads from FTS5, in
one file beside the index, memory-mapped when read.

Layout: a 16-byte magic and the length of a JSON header (state, section offsets, a checksum of
the sizes, token names, directory and per-token checksums), then 8-byte aligned sections: D per
rowid (uint32), each token's codes, rows (int32, sparse only) and (text, CJK) pairs (int64), the
token names (UTF-8, one a line), the directory (int64, ``DIR_COLS`` a token) and each token's
checksum.  Written to a temporary file, fsynced and renamed; a file out of shape loads as None,
a token out of shape raises ValueError when first asked for (store_keyword_cache checks it).
"""

from __future__ import annotations

import mmap
import os
import struct
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np

from .store_cache import State
from .store_guard import cache_head, open_cache, read_cache_head, write_cache

SUFFIX = ".keywords"
MAGIC = b"GGUFEMBED-KWDS\x00\x01"
NO_ROW = np.uint32(0xFFFFFFFF)
MAX_ROWID = 16_000_000  # sizes are kept per rowid: past this, no file (FTS5 alone)
DIR_COLS = 8  # count, dense, codes offset, codes length, code bytes, rows offset, pairs
#               offset, pairs length


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
    head = cache_head(MAGIC, {
        "epoch": stats.state.epoch, "inserted": stats.state.inserted,
        "deleted": stats.state.deleted, "rows": len(stats.sizes), "tokens": len(tokens),
        "sizes": sizes_at, "names": [names_at, len(names)], "dir": dir_at, "checks": checks_at,
        "length": offset,
        "check": _check([stats.sizes.astype("<u4"), np.frombuffer(names, np.uint8),
                         directory, checks_arr]),
    })
    return write_cache(path, [head + b"\x00" * ((-len(head)) % 8), *parts])


def load(path: Path) -> Stats | None:
    """The file at ``path`` memory-mapped, or None when it is missing or not in shape (its
    phrases' own checksums are checked when each is first used: store_keyword_cache)."""
    try:
        with open_cache(path) as f:  # a regular file: not a link, never a FIFO
            info = read_cache_head(f, MAGIC, 65536)
            if info is None:
                return None
            base = f.tell()
            base += (-base) % 8
            if os.fstat(f.fileno()).st_size != base + int(info["length"]):
                return None
            return _mapped(f, info, base)
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


def _mapped(f: BinaryIO, info: dict[str, Any], base: int) -> Stats | None:
    length = int(info["length"])
    data = np.empty(0, dtype=np.uint8)
    if length:  # a plain array over the map: slicing it costs nothing (np.memmap's does)
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
