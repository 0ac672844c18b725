"""Rescoring's reads shared among threads (store_read.py): the same ids and floats as the
serial read on the search's connection, only at the state that connection sees (a write
committed meanwhile is never mixed in), the search's results unchanged, and the thresholds
that keep small or cached reads on one connection."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from gguf_embed import store_read, vector_cache
from gguf_embed.errors import IndexFileError
from gguf_embed.search import vector_hits
from gguf_embed.store import Store

from .test_fast_search import add_docs, clustered, fast_path, ids, make, queries, truth

__all__ = ["fast_path"]  # the autouse fixture: the cache serves every search here

PARALLEL = {"parallel_from": 0, "probe": 0, "cold_row_s": 0.0}  # always the threads
SERIAL = {"parallel_from": 1 << 62}  # never


def read(store: Store, wanted: list[int], **options: object) -> tuple[list[int], np.ndarray]:
    return store_read.read_vectors(store.conn, store.path, store.dims or 0, wanted,
                                   **options)  # type: ignore[arg-type]


def wanted_ids(n: int, seed: int = 3) -> list[int]:
    rng = np.random.default_rng(seed)
    return [int(i) for i in rng.integers(1, n + 50, 300)]  # repeats, and ids past the end


@pytest.mark.parametrize(("readers", "probe"), [(2, 0), (3, 7), (5, 0), (4, 100)])
def test_threads_read_the_same_ids_and_floats_as_one_connection(
        tmp_path: Path, readers: int, probe: int) -> None:
    store, _ = make(tmp_path, n=600)
    with store.transaction():
        store.delete_documents(["/docs/a/000005.md", "/docs/b/000400.md"])  # gaps to skip
    wanted = wanted_ids(600)
    before = store_read.parallel_reads
    found, matrix = read(store, wanted, readers=readers, parallel_from=0, probe=probe,
                         cold_row_s=0.0)
    assert store_read.parallel_reads == before + 1  # the threads did read
    want_ids, want = read(store, wanted, **SERIAL)
    assert store_read.parallel_reads == before + 1
    assert found == want_ids and not {6, 7, 8, 9, 10} & set(found)
    assert matrix.tobytes() == want.tobytes()
    assert matrix.flags.c_contiguous and matrix.dtype == np.dtype("<f4")


def test_a_write_committed_during_the_search_is_not_mixed_in(tmp_path: Path) -> None:
    """The threads' own connections see the newest commit; the search's connection its
    snapshot: the rows read are those of the snapshot (read again on its connection)."""
    store, _ = make(tmp_path, n=600)
    writer = Store.open(tmp_path / "i.db")
    wanted = list(range(1, 700))
    try:
        with store.conn:  # the search's read transaction
            snapshot = read(store, wanted, **SERIAL)
            with writer.transaction():  # another process deletes a file and adds one
                writer.delete_documents(["/docs/a/000010.md"])  # chunks 11-15
            add_docs(writer, clustered(np.random.default_rng(9), 20), 600, "c")  # 601-620
            before = store_read.parallel_reads
            found, matrix = read(store, wanted, **PARALLEL)
            assert store_read.parallel_reads == before  # the threads' rows were dropped
            assert found == snapshot[0] and matrix.tobytes() == snapshot[1].tobytes()
            assert {11, 15} <= set(found) and not {601, 620} & set(found)
        found, _ = read(store, wanted, **PARALLEL)  # a new search sees the new state
        assert store_read.parallel_reads == before + 1
        assert not {11, 15} & set(found) and {601, 620} <= set(found)
    finally:
        writer.close()


def test_a_damaged_vector_read_by_a_thread_is_an_index_error(tmp_path: Path) -> None:
    store, _ = make(tmp_path, n=300)
    with store.transaction():
        store.conn.execute("UPDATE chunk_vectors SET embedding = zeroblob(12) WHERE chunk_id = 250")
    with pytest.raises(IndexFileError, match="chunk 250's vector has 12 bytes"):
        read(store, list(range(1, 301)), **PARALLEL)


def test_threads_that_cannot_open_the_file_leave_the_reading_to_the_search(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    store, _ = make(tmp_path, n=300)
    monkeypatch.setattr(store_read, "_reader", lambda path: None)
    before = store_read.parallel_reads
    found, matrix = read(store, list(range(1, 301)), **PARALLEL)
    assert store_read.parallel_reads == before
    assert found == list(range(1, 301))
    assert matrix.tobytes() == read(store, list(range(1, 301)), **SERIAL)[1].tobytes()


def test_few_rows_or_fast_rows_stay_on_the_search_connection(tmp_path: Path) -> None:
    store, _ = make(tmp_path, n=600)
    before = store_read.parallel_reads
    read(store, list(range(1, 100)), parallel_from=100, probe=0, cold_row_s=0.0)  # too few
    read(store, list(range(1, 600)), parallel_from=0, probe=32, cold_row_s=60.0)  # fast
    read(store, list(range(1, 600)), readers=1, parallel_from=0, probe=0)  # one reader
    assert store_read.parallel_reads == before
    read(store, list(range(1, 600)), parallel_from=0, probe=32, cold_row_s=0.0)  # "slow"
    assert store_read.parallel_reads == before + 1


def test_search_results_are_unchanged_when_the_threads_read(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    store, vectors = make(tmp_path)
    qs = queries(vectors, 8)
    serial = [vector_hits(store, q, 10) for q in qs]
    for name, value in PARALLEL.items():
        monkeypatch.setattr(store_read, name.upper(), value)
    before = store_read.parallel_reads
    for q, want in zip(qs, serial, strict=True):
        with store.conn:
            assert vector_hits(store, q, 10) == want
        assert ids(want) == truth(store, q, 10)
    assert store_read.parallel_reads == before + len(qs)


def test_a_stale_coarse_pass_never_brings_back_a_deleted_chunk(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Sign bits from before a delete (a cache that missed it) pick deleted chunks as
    candidates: the threads read the index, so those chunks are not scored or returned."""
    store, vectors = make(tmp_path)
    with store.conn:
        stale = vector_cache.current(store)
    assert stale is not None
    qs = queries(vectors, 6)
    near = {chunk_id for q in qs for chunk_id in ids(vector_hits(store, q, 10))}
    rows = store.chunk_rows(sorted(near))
    gone = sorted({rows[i].path for i in near})
    with store.transaction():
        store.delete_documents(gone)  # every file holding a top-10 chunk
    for name, value in PARALLEL.items():
        monkeypatch.setattr(store_read, name.upper(), value)
    monkeypatch.setattr(vector_cache, "current", lambda _store: stale)
    before = store_read.parallel_reads
    for q in qs:
        with store.conn:
            hits = ids(vector_hits(store, q, 10))
        assert hits and not set(hits) & near
        assert hits == truth(store, q, 10)
    assert store_read.parallel_reads == before + len(qs)


def test_closing_the_store_closes_the_reader_threads_connections(tmp_path: Path) -> None:
    """A closed index keeps no file descriptor open on its file (it can be deleted, even on
    Windows; its disk space is freed), although the reader threads are kept for later."""
    store, _ = make(tmp_path, n=600)
    db = (tmp_path / "i.db").stat()

    def open_on_db() -> int:
        count = 0
        for name in Path("/proc/self/fd").iterdir():
            try:
                info = name.stat()
            except OSError:
                continue
            count += (info.st_dev, info.st_ino) == (db.st_dev, db.st_ino)
        return count

    read(store, wanted_ids(600), readers=3, **{k: v for k, v in PARALLEL.items()})
    assert open_on_db() > 1  # the search's connection and the threads'
    store.close()
    assert open_on_db() == 0


def test_a_slow_block_after_fast_ones_hands_the_rest_to_the_threads(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The first rows' pages may be cached although the rest are not: any slow block, not
    only the first, hands what is left to the threads, and the rows are those of one read."""
    import threading
    import time

    store, _ = make(tmp_path, n=600)
    wanted = list(range(1, 601))
    read_on = store_read._read
    blocks: list[int] = []

    def second_block_slow(conn: object, path: Path, ids: list[int], *args: object,
                          **kwargs: object) -> object:
        if threading.current_thread() is threading.main_thread() and len(ids) == 40:
            blocks.append(ids[0])
            if len(blocks) == 2:
                time.sleep(0.05)  # as if its pages came from the disk
        return read_on(conn, path, ids, *args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(store_read, "_read", second_block_slow)
    before = store_read.parallel_reads
    found, matrix = read(store, wanted, readers=3, parallel_from=0, probe=40, cold_row_s=1e-3)
    assert blocks[:2] == [1, 41] and store_read.parallel_reads == before + 1
    monkeypatch.setattr(store_read, "_read", read_on)
    want_ids, want = read(store, wanted, **SERIAL)
    assert found == want_ids and matrix.tobytes() == want.tobytes()
