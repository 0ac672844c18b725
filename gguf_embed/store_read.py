"""Reading many chunks' float vectors at once (rescoring, see search.rescore).

Rescoring reads ~1,000 scattered rows a search at 10^6 chunks.  When their pages are in the
OS page cache that costs a few milliseconds on one connection; when they are not (a long-idle
process, an index larger than memory) each row costs one to four dependent disk reads, and
issued one after another (queue depth 1) they add up to 0.2-0.6 s.  So the rows are read on
the search's own connection a block at a time, timed; once a block was slow (pages not
cached) and many rows remain, the rest are shared among this thread and a few others, each
of those with its own read-only connection to the same file (APSW releases the GIL inside
SQLite, and an SSD serves reads in parallel; the threads and connections are kept for the next
search).

The threads must see what the search's connection sees: each reads its rows inside one read
transaction that first checks the file's ``chunk_log`` (a random epoch per file, and how many
chunks were ever inserted and deleted, bumped by triggers in every writing transaction) against
the one the search's connection reads now.  When any differs (a write committed in between, the
file was replaced), their rows are dropped and read again on the search's connection, so a
chunk deleted meanwhile is never returned and the vectors are those of the search's state.
"""

from __future__ import annotations

import contextlib
import itertools
import os
import stat
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import apsw
import numpy as np

from .errors import IndexDamaged
from .store_cache import chunk_log

if TYPE_CHECKING:  # imported when the threads first start (~5 ms; a one-shot search
    from concurrent.futures import ThreadPoolExecutor  # whose pages are cached never needs it)

READERS = 4  # threads: 4, 8 and 16 were alike on a virtio SSD (BENCHMARKS.md); 16 slower
PARALLEL_FROM = 256  # rows: fewer are always read on the search's connection
PROBE = 32  # rows read first on the search's connection, timed
COLD_ROW_S = 60e-6  # seconds a row: slower, the pages were not cached (5-40 us warm, 140+ cold)

parallel_reads = 0  # how many reads took the parallel path (for tests and benchmarks)
_pool: ThreadPoolExecutor | None = None
_pool_size = 0
_pool_lock = threading.Lock()
_held: dict[int, tuple[tuple[str, int, int], apsw.Connection]] = {}  # thread -> its connection
_held_lock = threading.Lock()
_forked_away: list[apsw.Connection] = []
_open_lock = threading.Lock()


def read_vectors(conn: apsw.Connection, path: Path, dims: int, ids: Sequence[int], *,
                 readers: int | None = None, parallel_from: int | None = None,
                 probe: int | None = None, cold_row_s: float | None = None
                 ) -> tuple[list[int], np.ndarray]:
    """Float vectors of these chunks that exist, by id (ascending), as one matrix; see the
    module's docstring for when the reading is shared among ``readers`` threads (the
    thresholds default to the module's constants)."""
    global parallel_reads
    readers = READERS if readers is None else readers
    parallel_from = PARALLEL_FROM if parallel_from is None else parallel_from
    probe = PROBE if probe is None else probe
    cold_row_s = COLD_ROW_S if cold_row_s is None else cold_row_s
    size = 4 * dims
    wanted = sorted({int(i) for i in ids})
    matrix = np.empty((len(wanted), dims), dtype="<f4")
    if not wanted or not dims:
        return [], matrix[:0]
    out = matrix.data.cast("B")
    if len(wanted) < parallel_from or readers < 2:
        found = [i for _, i in _read(conn, path, wanted, out, 0, size)]
        return found, matrix[:len(found)]
    # ``probe`` rows at a time on this connection, timed: the first slow block (its pages
    # were not cached; the first rows may be although the rest are not) hands the rest to
    # the threads, while at least a block is left
    found = []
    done = 0
    slow = probe == 0
    while done < len(wanted):
        if slow:
            got = _parallel(conn, path, wanted[done:], matrix, len(found), readers)
            if got is not None:
                parallel_reads += 1
                found += got
                break
            probe = len(wanted)  # the threads could not: the rest on this connection
        block = wanted[done:done + probe]
        start = time.perf_counter()
        found += [i for _, i in _read(conn, path, block, out, len(found), size)]
        done += len(block)
        slow = (time.perf_counter() - start >= cold_row_s * len(block)
                and len(wanted) - done >= probe)
    return found, matrix[:len(found)]


def _read(conn: apsw.Connection, path: Path, ids: Sequence[int], out: memoryview, row: int,
          size: int, *, packed: bool = True) -> list[tuple[int, int]]:
    """(index in ``ids``, id) of the rows found, read into ``out`` through one incremental-I/O
    blob handle moved from row to row (no bytes object per row): one after another from row
    ``row`` on (``packed``), else each at row ``row`` + its index."""
    found: list[tuple[int, int]] = []
    blob = None
    try:
        for j, chunk_id in enumerate(ids):
            try:
                if blob is None:
                    blob = conn.blob_open("main", "chunk_vectors", "embedding", chunk_id, False)
                else:
                    blob.reopen(chunk_id)
            except apsw.SQLError:  # no such chunk (deleted): the handle is closed
                blob = None
                continue
            if blob.length() != size:
                raise IndexDamaged(
                    f"index {path} is damaged: chunk {chunk_id}'s vector has {blob.length()} "
                    f"bytes, not {size} ({size // 4} dims); build a new index of your files "
                    f"into another file (gguf-embed index --db NEW.db FOLDER), or restore it "
                    f"from a backup", path=str(path))
            blob.read_into(out, (row + (len(found) if packed else j)) * size, size)
            found.append((j, chunk_id))
    finally:
        if blob is not None:
            blob.close()
    return found


def _parallel(conn: apsw.Connection, path: Path, ids: list[int], matrix: np.ndarray,
              row: int, readers: int) -> list[int] | None:
    """Read ``ids`` into ``matrix`` from row ``row`` on with ``readers`` threads, each in one
    read transaction at the state ``conn`` sees; None where that cannot be done (then nothing
    it read is used)."""
    state = chunk_log(conn)
    if state is None:  # an old index without chunk_log: no state to check the threads against
        return None
    size = 4 * matrix.shape[1]
    # one part each for the threads and one for this thread (on ``conn``: its own snapshot)
    bounds = np.linspace(0, len(ids), min(readers + 1, len(ids)) + 1).astype(int).tolist()
    parts = [(lo, hi) for lo, hi in itertools.pairwise(bounds) if hi > lo]
    view = matrix[row:row + len(ids)]  # each part lands at its place, then is closed up
    out = view.data.cast("B")
    jobs = [_executor(readers).submit(_read_part, path, state, ids[lo:hi], out, lo, size)
            for lo, hi in parts[:-1]]
    try:
        lo, hi = parts[-1]
        mine = _read(conn, path, ids[lo:hi], out, lo, size, packed=False)
    finally:
        got = [job.result() for job in jobs]  # an IndexDamaged (a damaged row) is raised here
    got.append(mine)
    if any(part is None for part in got):
        return None
    found: list[int] = []
    keep: list[int] = []
    for (lo, _), part in zip(parts, got, strict=True):
        assert part is not None
        for j, chunk_id in part:
            keep.append(lo + j)
            found.append(chunk_id)
    if len(keep) < len(ids):  # rows deleted before this state: close up the gaps
        view[:len(keep)] = view[np.array(keep, dtype=np.int64)]
    return found


def _read_part(path: Path, state: tuple[str, int, int], ids: list[int], out: memoryview,
               row: int, size: int) -> list[tuple[int, int]] | None:
    """(index in ``ids``, id) of the rows found, read into ``out`` at row ``row`` + index on
    this thread's own connection; None when it cannot open the file or sees another state."""
    conn = _reader(path)
    if conn is None:
        return None
    try:
        with conn:  # one read transaction: the state checked is the one read
            if chunk_log(conn) != state:
                return None
            found = _read(conn, path, ids, out, row, size, packed=False)
    except apsw.Error:  # busy, locked, I/O: the search's own connection reads them instead
        _drop_reader()
        return None
    return found


def _reader(path: Path) -> apsw.Connection | None:
    """This thread's read-only connection to ``path`` (kept for the next search; reopened
    when the path names another file), or None when it cannot be opened."""
    try:
        info = os.stat(path)
    except OSError:
        return None
    if not stat.S_ISREG(info.st_mode):
        return None
    key = (str(path), info.st_dev, info.st_ino)
    me = threading.get_ident()
    with _held_lock:
        held = _held.get(me)
    if held is not None and held[0] == key:
        return held[1]
    _drop_reader()
    with _open_lock:  # one open at a time: the file descriptors it adds are its own
        before = _fds_of(key)
        try:
            conn = apsw.Connection(str(path), flags=apsw.SQLITE_OPEN_READONLY)
            conn.setbusytimeout(1_000)
        except apsw.Error:
            return None
        for fd in _fds_of(key) - before:
            # No readahead on this connection's reads: each is one row's pages, and the
            # kernel's extra pages only queue before the next reads (BENCHMARKS.md).
            with contextlib.suppress(OSError):
                os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_RANDOM)
    with _held_lock:
        _held[me] = (key, conn)
    return conn


def _fds_of(key: tuple[str, int, int]) -> set[int]:
    """This process's open file descriptors on the file ``key`` names (Linux's /proc; an
    empty set elsewhere)."""
    found: set[int] = set()
    with contextlib.suppress(OSError):
        for name in os.listdir("/proc/self/fd"):
            with contextlib.suppress(OSError, ValueError):
                info = os.stat(f"/proc/self/fd/{name}")
                if (info.st_dev, info.st_ino) == key[1:]:
                    found.add(int(name))
    return found


def _drop_reader() -> None:
    with _held_lock:
        held = _held.pop(threading.get_ident(), None)
    if held is not None:
        with contextlib.suppress(apsw.Error):
            held[1].close()


def release(path: Path) -> None:
    """Close the reader threads' connections to ``path`` (the index is closed: its file
    must not stay open, e.g. so that it can be deleted on Windows).  A reader using one at
    that moment fails its part, which the search's own connection then reads."""
    with _held_lock:
        mine = [me for me, (key, _) in _held.items() if key[0] == str(path)]
        conns = [_held.pop(me)[1] for me in mine]
    for conn in conns:
        with contextlib.suppress(apsw.Error):
            conn.close()


def _executor(readers: int) -> ThreadPoolExecutor:
    """The process's reader threads (started on the first parallel read, then kept)."""
    global _pool, _pool_size
    from concurrent.futures import ThreadPoolExecutor

    with _pool_lock:
        if _pool is None or _pool_size < readers:
            if _pool is not None:
                _pool.shutdown(wait=False)
            _pool = ThreadPoolExecutor(readers, thread_name_prefix="gguf-embed vector reader")
            _pool_size = readers
        return _pool


def _after_fork() -> None:  # a child process starts without the parent's threads
    global _pool, _pool_size, _pool_lock, _held_lock, _open_lock
    _pool, _pool_size, _pool_lock, _held_lock = None, 0, threading.Lock(), threading.Lock()
    # the parent's connections are never used, nor closed, here (SQLite: not across a fork)
    _forked_away.extend(conn for _, conn in _held.values())
    _held.clear()
    _open_lock = threading.Lock()


os.register_at_fork(after_in_child=_after_fork)
