"""``INDEX.bits``: the file beside an index that holds its sign bits (see
:mod:`gguf_embed.vector_cache`, which reads it for one-shot searches and keeps it in step).

Written to a temporary file, fsynced and renamed; a damaged, stale or foreign file reads as
None (the caller rebuilds it from SQLite).  Loading checks its size, its header and the
checksums of its chunk and document ids and of a sample of its bits (every
``QUICK_STRIDE``-th row and the last ``QUICK_TAIL``), not of every bit: that would read the
whole file (320 MB at 10^6 chunks × 2560 dims, ~40 ms of a one-shot search) before the scan
reads it again.  The ids' and documents' checksum (``order``) weighs each entry by its place,
so two entries swapped change it (a plain sum, ``check``/``quick``, does not: those are still
written for older readers; a file without ``order`` is rebuilt).  ~1.5 ms at 10^6 rows.

No checksum stops someone who can write the file, and none is needed for safety: a damaged
cache can only change which candidates are rescored, never a score, nor let a deleted or
filtered-out chunk through: scores and vectors come from SQLite, and search.py reads each
returned chunk's row from SQLite under the path filter (a chunk the cache gave another
document is dropped there).
"""

from __future__ import annotations

import os
import struct
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from .store_cache import State
from .store_guard import cache_head, open_cache, read_cache_head, write_cache

if TYPE_CHECKING:
    from .vector_cache import Bits

SUFFIX = ".bits"
MAGIC = b"GGUFEMBED-BITS\x00\x01"
QUICK_STRIDE = 1024  # rows: the bits checked on loading (with the last QUICK_TAIL rows)
QUICK_TAIL = 64
ALIGN = 64  # bytes: where the arrays of INDEX.bits start (see save)
ORDER_BLOCK = 32_768  # entries a block when summing ids and documents by place (see _order)


def cache_path(db: Path) -> Path:
    return Path(str(db) + SUFFIX)


def save(bits: Bits, path: Path) -> bool:
    """Write ``bits`` to ``path`` crash-safely (temporary file, fsync, rename); False when the
    folder cannot be written."""
    info: dict[str, Any] = {
        "epoch": bits.state.epoch, "inserted": bits.state.inserted,
        "deleted": bits.state.deleted, "dims": bits.dims, "rows": len(bits),
        "width": int(bits.words.shape[1]),
        "check": _check(bits.ids, bits.docs, bits.words),  # for older readers
        "quick": _quick(bits.ids, bits.docs, bits.words),  # checked, and by older readers
        "order": _order(bits.ids, bits.docs),  # checked (see the module's docstring)
        "pad": "",
    }
    # the arrays start at a multiple of ALIGN bytes: numpy reads an unaligned memory map
    # through a copy of it (np.searchsorted over 10^6 ids: 200 us, not 3)
    info["pad"] = " " * (-len(cache_head(MAGIC, info)) % ALIGN)
    head = cache_head(MAGIC, info)
    return write_cache(path, [head, *(np.ascontiguousarray(a).data.cast("B")
                                      for a in (bits.ids, bits.docs, bits.words))])


def load(path: Path, dims: int, *, prefetch: bool = False) -> Bits | None:
    """The cache file at ``path``, or None when it is missing, damaged, or not for ``dims``.
    ``prefetch`` (a search, which scans it all next): the kernel is asked to read the whole
    file ahead, in large requests, where the scan would fault its pages in one readahead
    window at a time (when they are not cached: 336 MB at 10^6 x 2560; ~0.1 ms when
    they are)."""
    try:
        with open_cache(path) as f:  # a regular file: not a link, never a FIFO
            info = read_cache_head(f, MAGIC, 4096)
            if info is None:
                return None
            rows, width = int(info["rows"]), int(info["width"])
            if int(info["dims"]) != dims or width != (dims + 63) // 64:
                return None
            offset = f.tell()
            if os.fstat(f.fileno()).st_size != offset + rows * (16 + 8 * width):
                return None
            if prefetch and rows and hasattr(os, "posix_fadvise"):
                os.posix_fadvise(f.fileno(), offset, rows * (16 + 8 * width),
                                 os.POSIX_FADV_WILLNEED)
            if rows == 0:
                ids = docs = np.empty(0, dtype=np.int64)
                words = np.empty((0, width), dtype=np.uint64)
            else:  # mapped, not read: a one-shot search touches only what it scans
                ids = np.memmap(f, dtype="<i8", mode="r", offset=offset, shape=(rows,))
                docs = np.memmap(f, dtype="<i8", mode="r", offset=offset + 8 * rows,
                                 shape=(rows,))
                words = np.memmap(f, dtype="<u8", mode="r", offset=offset + 16 * rows,
                                  shape=(rows, width))
    except (OSError, ValueError, KeyError, TypeError, struct.error):
        return None
    if info.get("order") != _order(ids, docs) or info.get("quick") != _quick(ids, docs, words):
        return None  # damaged, or written before "order": rebuilt from SQLite
    from .vector_cache import Bits  # loaded already: it imports this module

    state = State(str(info["epoch"]), int(info["inserted"]), int(info["deleted"]))
    return Bits(state, dims, ids, docs, words)


def _check(ids: np.ndarray, docs: np.ndarray, words: np.ndarray) -> list[int]:
    """A cheap checksum (wrapping sums of the 64-bit words; ~10 ms at a million rows)."""
    return [_sum(a) for a in (ids, docs, words)]


def _quick(ids: np.ndarray, docs: np.ndarray, words: np.ndarray) -> list[int]:
    """:func:`_check` of the ids and documents, and of a sample of the bits (see the module's
    docstring): ~2 ms at a million rows, whatever the dimensions."""
    return [_sum(ids), _sum(docs), _sum(words[::QUICK_STRIDE]), _sum(words[-QUICK_TAIL:])]


def _order(ids: np.ndarray, docs: np.ndarray) -> list[int]:
    """Sums of the ids and of the documents, each entry weighed by its place (1, 2, ...),
    wrapping at 2**64: two entries swapped change it by (j - i) × (a_i - a_j), never 0 mod
    2**64 while that product is below it (ids and document ids under 2**40, fewer than 2**24
    rows).  Summed a block at a time in buffers that stay in the CPU's cache (whole-array
    temporaries cost a one-shot search ~4 ms of page faults at 10^6 rows; a hash of the
    16 MB ~12 ms)."""
    weights = np.arange(1, ORDER_BLOCK + 1, dtype=np.uint64)
    buf = np.empty(ORDER_BLOCK, dtype=np.uint64)
    out = []
    for array in (ids, docs):
        values = np.ascontiguousarray(array).view(np.uint64).ravel()
        total = 0
        for start in range(0, len(values), ORDER_BLOCK):
            part = values[start:start + ORDER_BLOCK]
            with np.errstate(over="ignore"):  # Σ (start + j + 1) a_j, as Python ints
                np.multiply(part, weights[:len(part)], out=buf[:len(part)])
                total += int(np.add.reduce(buf[:len(part)], dtype=np.uint64)) \
                    + start * int(np.add.reduce(part, dtype=np.uint64))
        out.append(total % 2**64)
    return out


def _sum(array: np.ndarray) -> int:
    with np.errstate(over="ignore"):
        return int(np.add.reduce(np.ascontiguousarray(array).view(np.uint64).ravel(),
                                 dtype=np.uint64))

