"""The coarse pass of vector search, in memory: every chunk's sign bits as one numpy matrix.

sqlite-vec's Hamming KNN over its ``vec_bits`` table costs ~1.4 s at a million chunks (its Linux
wheel has no SIMD); the same bits held in memory are 128 MB at 1024 dims, which faiss's
popcount heap scan reads in ~10 ms (numpy's blocked XOR + popcount in ~40-80 ms where faiss is
not installed), in place: bits loaded from ``INDEX.bits`` stay a memory map, not a copy.  The
candidates it picks are rescored exactly from
the float vectors in SQLite (search.py), so the cache decides only *which* chunks are looked at,
never their scores, and a chunk that is no longer in the file is never returned.  Its chunk
-> document table also answers grouping by file (:func:`chunk_docs`), only when it is at the
search's own state.

The SQLite file stays the one source of truth; this is a cache derived from it:

* it is checked against the file's ``chunk_log`` (a random epoch per file, and how many chunks
  were ever inserted and deleted, bumped by triggers in the writing transaction) on every
  search, inside the search's read transaction;
* when the file moved on, it is brought up to date incrementally (chunks that left are dropped,
  new ones added; a chunk id SQLite reused is re-read, see :func:`_refresh`) or rebuilt;
* it lives in a process (one per index file, shared by every :class:`~gguf_embed.Index` on it:
  ``serve``, ``mcp``, a library app keep it warm) and in a file beside the index,
  ``INDEX.bits`` (for one-shot CLI searches), written to a temporary file, fsynced and renamed;
  a damaged, stale or foreign file is ignored and rewritten, and an index in a folder that
  cannot be written is cached in memory only.  Deleting ``INDEX.bits`` is always safe.
  What loading it checks: :mod:`gguf_embed.vector_cache_file`.
"""

from __future__ import annotations

import contextlib
import functools
import os
import sys
import threading
import weakref
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

import numpy as np

from .store import Store
from .store_cache import State, chunk_log, live_chunks, sign_bit_rows
from .vector_cache_file import ALIGN as ALIGN  # re-exported: INDEX.bits's format
from .vector_cache_file import MAGIC as MAGIC
from .vector_cache_file import QUICK_STRIDE as QUICK_STRIDE
from .vector_cache_file import QUICK_TAIL as QUICK_TAIL
from .vector_cache_file import SUFFIX as SUFFIX
from .vector_cache_file import cache_path, load, save

BLOCK = 32_768  # rows per popcount block: the XOR buffer stays in the CPU's cache
_POPCOUNT = np.array([bin(i).count("1") for i in range(256)], dtype=np.uint8)
REBUILD_SHARE = 0.25  # refresh by rebuilding when more than this share of chunks changed
FAISS_FROM = 4_000_000  # 64-bit words of sign bits (32 MB): from this many, faiss scans them


@dataclass(frozen=True)
class Bits:
    """An immutable snapshot of the sign bits at one :class:`State` (searches share it)."""

    state: State
    dims: int
    ids: np.ndarray  # int64, ascending chunk ids
    docs: np.ndarray  # int64, each chunk's document id
    words: np.ndarray  # uint64 [n, words]: the sign bits, little-endian bit order

    def __len__(self) -> int:
        return len(self.ids)

    def nearest(self, query: np.ndarray, count: int,
                mask: np.ndarray | None = None) -> np.ndarray:
        """Chunk ids of (at least) the ``count`` rows with the fewest sign bits unlike
        ``query``'s, among ``mask`` (without faiss, ties at the cut-off are all kept, up to
        2 × ``count``)."""
        n = len(self.ids)
        if n == 0:
            return np.empty(0, dtype=np.int64)
        qwords = _words(np.packbits(np.asarray(query) > 0, bitorder="little")[None, :])[0]
        knn = _scanner(self.words)
        if knn is not None:
            if mask is None:
                return self.ids[knn(qwords, self.words, count)]
            allowed = np.flatnonzero(mask)  # a copy of the allowed rows' bits only
            if not len(allowed):
                return np.empty(0, dtype=np.int64)
            return self.ids[allowed[knn(qwords, self.words[allowed], count)]]
        dist = np.empty(n, dtype=np.uint16)
        width = self.words.shape[1]
        buf = np.empty((min(BLOCK, n), width), dtype=np.uint64)
        cnt = np.empty((min(BLOCK, n), width), dtype=np.uint8)
        for start in range(0, n, BLOCK):
            stop = min(start + BLOCK, n)
            rows = stop - start
            np.bitwise_xor(self.words[start:stop], qwords, out=buf[:rows])
            if hasattr(np, "bitwise_count"):  # numpy >= 2
                np.bitwise_count(buf[:rows], out=cnt[:rows])
                _row_sums(cnt[:rows], dist[start:stop])
            else:
                np.sum(_POPCOUNT[buf[:rows].view(np.uint8)], axis=1, dtype=np.uint16,
                       out=dist[start:stop])
        limit = self.dims + 1
        if mask is not None:
            dist[~mask] = limit
        hist = np.bincount(dist, minlength=limit + 1)
        hist[limit] = 0  # rows masked out
        reach = int(np.searchsorted(np.cumsum(hist), min(count, int(hist.sum()))))
        chosen = np.flatnonzero(dist <= reach)
        if len(chosen) > 2 * count:  # many ties at the cut-off: keep the closest
            chosen = chosen[np.argsort(dist[chosen], kind="stable")[:2 * count]]
        return self.ids[chosen]

    def doc_mask(self, allowed_docs: np.ndarray) -> np.ndarray:
        """Which rows belong to the documents ``allowed_docs``."""
        if len(self.docs) == 0 or len(allowed_docs) == 0:
            return np.zeros(len(self.docs), dtype=bool)
        top = int(max(self.docs.max(), allowed_docs.max())) + 1
        table = np.zeros(top, dtype=bool)
        table[allowed_docs] = True
        return cast(np.ndarray, table[self.docs])


def _row_sums(counts: np.ndarray, out: np.ndarray) -> None:
    """``out[i] = counts[i].sum()``: column by column for rows of up to 16 words (numpy's
    reduction along a short row pays per row: 10^6 x 6 words, 26 -> 15 ms; x 16, 39 -> 29
    ms), by ``np.sum`` for wider rows, where the columns' passes cost more."""
    if counts.shape[1] > 16:
        np.sum(counts, axis=1, dtype=np.uint16, out=out)
        return
    np.copyto(out, counts[:, 0])
    for column in range(1, counts.shape[1]):
        np.add(out, counts[:, column], out=out)


_import_faiss = True  # False after searching_once(): numpy scans unless faiss is imported


def searching_once(once: bool = True) -> None:
    """Say that this process searches once (a one-shot command): the sign bits are then
    scanned with numpy (10^6 rows: ~20 ms at 384 dims, ~35 at 1024, ~65 at 2560) instead
    of importing faiss for a single scan (~70 ms of CPU, most of it holding the GIL, for a
    scan of 6-15 ms), unless faiss is imported already.  A process that searches again and
    again (a server, an application) leaves this alone: faiss pays from the second scan.
    ``searching_once(False)`` undoes it."""
    global _import_faiss
    _import_faiss = not once


def _scanner(words: np.ndarray) -> Callable[[np.ndarray, np.ndarray, int], np.ndarray] | None:
    """faiss's scan (:func:`_faiss_knn`) where it pays, else None (numpy's): importing faiss
    costs a fresh process ~70 ms, more than numpy's scan of fewer than ``FAISS_FROM`` words
    (~10 ms; 10^5 chunks at 384 dims: ~3 ms), or than any one scan (:func:`searching_once`),
    so those do without it, unless the process has imported it already."""
    if "faiss" not in sys.modules and (words.size < FAISS_FROM or not _import_faiss):
        return None
    return _faiss_knn()


def prepare(db: str | Path) -> None:
    """Import what a vector search of the index at ``db`` will scan its sign bits with: faiss,
    for an ``INDEX.bits`` of about ``FAISS_FROM`` words or more (nothing after
    :func:`searching_once`).  Meant for a thread while the model loads (llama.cpp lets go of
    the GIL).  Never raises: the search itself says what is wrong."""
    if not _import_faiss:
        return
    with contextlib.suppress(Exception):
        if os.path.getsize(cache_path(Path(db))) >= 8 * FAISS_FROM:
            _faiss_knn()


@functools.cache
def _faiss_knn() -> Callable[[np.ndarray, np.ndarray, int], np.ndarray] | None:
    """Row numbers of the ``k`` rows of ``words`` nearest ``query`` in Hamming distance, by
    faiss's heap scan specialised for the code size (several times numpy's at a million
    rows), reading ``words`` where it lies (a memory-mapped ``.bits`` file is not copied); None
    without faiss."""
    try:
        import faiss
    except ImportError:
        return None
    # One thread: a scan of 10^6 rows is ~10-30 ms on one core, and faiss's OpenMP threads
    # spin-waiting beside other work (serve's requests, a busy laptop) cost ~100 ms more
    # (bench_scale: 173-210 ms p50 with faiss's default threads vs 52-70 ms with one).
    faiss.omp_set_num_threads(1)

    def knn(query: np.ndarray, words: np.ndarray, k: int) -> np.ndarray:
        base = np.ascontiguousarray(words).view(np.uint8)  # a view: no copy
        _, rows = faiss.knn_hamming(query.view(np.uint8)[None, :], base,
                                    min(k, len(base)), variant="hc")
        found = rows[0]
        return cast(np.ndarray, found[found >= 0])

    return knn


def _words(packed: np.ndarray) -> np.ndarray:
    """Packed bit rows (uint8) as uint64 words, zero-padded to whole words."""
    pad = (-packed.shape[1]) % 8
    if pad:
        packed = np.pad(packed, ((0, 0), (0, pad)))
    return np.ascontiguousarray(packed).view("<u8").reshape(len(packed), packed.shape[1] // 8)


def state_of(store: Store) -> State | None:
    """The file's ``chunk_log``, or None for an index that has none (an old file opened
    read-only, which cannot be migrated)."""
    row = chunk_log(store.conn)
    return None if row is None else State(*row)


# ---------------------------------------------------------------- reading from SQLite
def _bits_of(store: Store, ids: np.ndarray, dims: int) -> np.ndarray:
    """Sign bits of these chunks, made from their float vectors (a non-finite value: 0)."""
    nbytes = (dims + 7) // 8
    out = np.zeros((len(ids), nbytes), dtype=np.uint8)
    if not len(ids):
        return _words(out)
    found, matrix = store.vectors([int(i) for i in ids])
    if found:
        where = np.searchsorted(ids, np.array(found, dtype=np.int64))
        out[where] = np.packbits(matrix > 0, axis=1, bitorder="little")
    return _words(out)


def build(store: Store, state: State) -> Bits:
    """Every chunk's sign bits, read from the ``vec_bits`` table in one scan."""
    dims = store.dims or 0
    ids, docs = live_chunks(store)
    nbytes = (dims + 7) // 8
    packed = np.zeros((len(ids), nbytes), dtype=np.uint8)
    if len(ids):
        got_ids: list[int] = []
        blobs: list[bytes] = []
        for rowid, blob in sign_bit_rows(store):
            got_ids.append(rowid)
            blobs.append(blob[:nbytes])
        if got_ids:
            got = np.array(got_ids, dtype=np.int64)
            data = np.frombuffer(b"".join(blobs), dtype=np.uint8).reshape(len(got), nbytes)
            where = np.searchsorted(ids, got)
            keep = (where < len(ids)) & (ids[np.minimum(where, len(ids) - 1)] == got)
            packed[where[keep]] = data[keep]
    return Bits(state, dims, ids, docs, _words(packed))


def _refresh(store: Store, old: Bits, state: State) -> Bits:
    """``old`` brought up to ``state``: chunks that left dropped, new ones added.

    SQLite gives a new row the largest id + 1, so after the newest chunks are deleted their ids
    come back for new ones.  Every insert and delete is counted in ``chunk_log``: inserts not
    seen as new ids were either deleted again or reused an id the cache holds, and a reused id
    is always above every surviving older one -- so re-reading that many of the highest ids
    the cache shares with the file is enough."""
    ids, docs = live_chunks(store)
    kept = np.isin(old.ids, ids, assume_unique=True)
    added = ids[~np.isin(ids, old.ids, assume_unique=True)]
    unexplained = (state.inserted - old.state.inserted) - len(added)
    if unexplained < 0 or len(added) + unexplained > REBUILD_SHARE * max(len(ids), 1):
        return build(store, state)
    words = old.words[kept]
    shared = old.ids[kept]
    reread = shared[len(shared) - unexplained:] if unexplained else shared[:0]
    if len(reread):
        words[len(shared) - len(reread):] = _bits_of(store, reread, old.dims)
    all_ids = np.concatenate([shared, added])
    all_words = np.concatenate([words, _bits_of(store, added, old.dims)])
    order = np.argsort(all_ids, kind="stable")
    all_ids = all_ids[order]
    if not np.array_equal(all_ids, ids):  # cannot happen; rebuild rather than trust it
        return build(store, state)
    return Bits(state, old.dims, ids, docs, np.ascontiguousarray(all_words[order]))


# ---------------------------------------------------------------- the process-wide cache
_lock = threading.Lock()
_warm: dict[str, Bits] = {}
_keys: weakref.WeakKeyDictionary[Store, str] = weakref.WeakKeyDictionary()


def _key(store: Store) -> str:
    """The real path of ``store``'s file, the key of ``_warm``, resolved once per store (a
    search asks twice, and after the scan has flushed the CPU's caches ``realpath`` costs
    ~0.1 ms; a file replaced meanwhile has another epoch, which every use checks)."""
    key = _keys.get(store)
    if key is None:
        key = _keys[store] = os.path.realpath(store.path)
    return key


def current(store: Store) -> Bits | None:
    """The sign bits of ``store`` as of its read transaction now (call inside one), from the
    process, else the file beside the index, else SQLite (then written beside it); None for
    an index without a ``chunk_log``."""
    state = state_of(store)
    if state is None or not store.dims:
        return None
    with _lock:
        key = _key(store)
        bits = _warm.get(key)
        if bits is not None and bits.dims == store.dims and bits.state.epoch == state.epoch \
                and bits.state.inserted >= state.inserted and bits.state.deleted >= state.deleted:
            # this state, or a newer one (another Index in this process read later): rescoring
            # reads this snapshot's vectors, so chunks it does not hold are never returned
            return bits
        if bits is not None and bits.state.epoch == state.epoch and bits.dims == store.dims \
                and bits.state.inserted <= state.inserted:
            bits = _refresh(store, bits, state)  # warm: the file beside is left as it was
        else:
            path = cache_path(store.path)
            bits = load(path, store.dims, prefetch=True)
            if bits is not None and (bits.state.epoch != state.epoch
                                     or bits.state.inserted > state.inserted
                                     or bits.state.deleted > state.deleted):
                bits = None  # another file's, or newer than this snapshot
            if bits is None:
                bits = build(store, state)
                save(bits, path)
            elif bits.state != state:
                bits = _refresh(store, bits, state)
                save(bits, path)
        _warm[key] = bits
        return bits


def chunk_docs(store: Store, ids: Iterable[int]) -> dict[int, int] | None:
    """chunk id -> document id of these chunks that exist, from the process's sign bits when
    they hold exactly the state ``store``'s read transaction sees (a chunk's document never
    changes while it lives: a renamed file keeps its id); None otherwise (not loaded, older,
    or newer: a newer state may have given a deleted chunk's id to another document), and the
    caller asks SQLite.  Grouping by file then reads no chunk row beyond the ones shown
    (BENCHMARKS.md: 50 rows, 0.3-0.6 ms when cached, ~7 ms on average when not)."""
    state = state_of(store)
    if state is None:
        return None
    with _lock:
        bits = _warm.get(_key(store))
    if bits is None or bits.state != state or bits.dims != store.dims \
            or not (bits.ids.flags.aligned and bits.docs.flags.aligned):
        return None  # (unaligned: an INDEX.bits written before ALIGN, until it is rewritten)
    wanted = np.fromiter(ids, dtype=np.int64)  # repeated ids: found twice, kept once
    if not len(wanted) or not len(bits.ids):
        return {}
    where = np.minimum(np.searchsorted(bits.ids, wanted), len(bits.ids) - 1)
    live = bits.ids[where] == wanted
    return dict(zip(wanted[live].tolist(), bits.docs[where[live]].tolist(), strict=True))


def forget(db: Any = None) -> None:
    """Drop the in-memory copy of one index (or of all): the next search reloads it."""
    with _lock:
        if db is None:
            _warm.clear()
        else:
            _warm.pop(os.path.realpath(db), None)
