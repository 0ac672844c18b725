"""Sharing one engine between threads: queries jump the queue of document batches, concurrent
calls never mix their vectors; one Index per thread, each search on one committed state."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import numpy as np
import pytest

from gguf_embed import Engine, EngineOptions, Index
from gguf_embed._context import DecodeLock
from gguf_embed.errors import IndexFileError
from gguf_embed.testing import FakeEngine


def _wait_for(predicate, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.001)


def test_decode_lock_serves_urgent_waiters_first() -> None:
    lock = DecodeLock()
    order: list[str] = []

    def take(name: str, urgent: bool) -> None:
        with lock.hold(urgent):
            order.append(name)

    with lock.hold():
        bulk = [threading.Thread(target=take, args=(f"bulk{i}", False)) for i in range(3)]
        for t in bulk:
            t.start()
        _wait_for(lambda: lock.waiting == 3)
        query = threading.Thread(target=take, args=("query", True))
        query.start()
        _wait_for(lambda: lock.waiting == 4)
    for t in [*bulk, query]:
        t.join()
    assert order[0] == "query" and sorted(order[1:]) == ["bulk0", "bulk1", "bulk2"]


def test_query_waits_for_one_decode_not_a_batch(minilm_path: Path) -> None:
    """A query embedded while a document batch of many decodes runs is decoded right after
    the decode in flight (the old engine held its lock for the whole batch)."""
    engine = Engine(minilm_path, options=EngineOptions(batch_tokens=64))
    log: list[str] = []
    context = engine._packed_context()
    decode = context.decode

    def recording(seqs: list[np.ndarray], threads: int | None = None) -> np.ndarray:
        log.append(threading.current_thread().name)
        if len(log) == 1:
            started.set()
        return decode(seqs, threads)

    context.decode = recording  # type: ignore[method-assign]
    started = threading.Event()
    docs = [f"document number {i} about topic {i % 7} with some more words" for i in range(160)]
    bulk = threading.Thread(target=engine.encode, args=(docs,), name="bulk")
    bulk.start()
    assert started.wait(60)
    at_submit = len(log)
    query = engine.embed(["where is topic three?"], query=True)
    bulk.join()
    position = threading.current_thread().name
    where = log.index(position)
    assert len(log) > 15  # the batch took many decodes
    assert where <= at_submit + 2, log  # the query waited for at most the decode(s) in flight
    engine.close()
    expected = Engine(minilm_path)
    assert np.allclose(query, expected.embed(["where is topic three?"], query=True), atol=1e-5)
    expected.close()


@pytest.mark.parametrize("which", ["minilm", "qwen"])
def test_threads_sharing_an_engine_get_their_own_vectors(
        which: str, minilm_path: Path, qwen_path: Path) -> None:
    """Concurrent calls (queries and documents, packed and long chunked inputs) give each
    thread exactly the vectors a lone call gives."""
    path = minilm_path if which == "minilm" else qwen_path
    # small packs: the tiny Qwen3's long inputs are decoded alone, in chunks, between others
    engine = Engine(path, options=EngineOptions(batch_tokens=64))
    jobs = {}
    for t in range(4):
        texts = [f"thread {t} text {i}: " + "words about things " * (1 + (i * 7 + t) % 20)
                 for i in range(12)]
        jobs[t] = (texts, t % 2 == 1)
    expected = {t: engine.embed(texts, query=q) for t, (texts, q) in jobs.items()}
    got: dict[int, list[np.ndarray]] = {t: [] for t in jobs}
    errors: list[BaseException] = []

    def work(t: int) -> None:
        try:
            texts, q = jobs[t]
            for _ in range(3):
                got[t].append(engine.embed(texts, query=q))
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(t,)) for t in jobs]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    engine.close()
    assert not errors
    for t in jobs:
        for vectors in got[t]:
            assert np.allclose(vectors, expected[t], atol=1e-4)


def _write_docs(folder: Path, version: int, n: int = 12) -> None:
    for i in range(n):
        (folder / f"doc{i:02d}.md").write_text(
            f"# Note {i}\n\ncodeword{i} marks note {i}. Revision {version} of this note talks "
            f"about {'gardens' if i % 2 else 'engines'} and number {i * 13 + version}.\n")


def test_searching_threads_while_one_writes_lose_and_mix_nothing(
        tmp_path: Path, minilm_path: Path) -> None:
    docs = tmp_path / "docs"
    docs.mkdir()
    _write_docs(docs, 0)
    db = tmp_path / "index.db"
    engine = Engine(minilm_path)  # one engine for the writer and every reader
    with Index(db, engine) as writer:
        writer.add([docs])
    stop = threading.Event()
    problems: list[str] = []
    searches = [0]

    def reader(offset: int) -> None:
        with Index(db, engine, readonly=True) as index:
            i = offset
            while not stop.is_set():
                i = (i + 1) % 12
                for mode in ("hybrid", "keyword"):
                    hits = index.search(f"codeword{i}", k=3, mode=mode)
                    mine = [h for h in hits if h.path.endswith(f"doc{i:02d}.md")]
                    if not mine:
                        problems.append(f"lost doc{i} ({mode})")
                    elif f"codeword{i}" not in mine[0].snippet:
                        problems.append(f"mixed doc{i}: {mine[0].snippet}")
                    searches[0] += 1
                time.sleep(0.01)

    def writer_run() -> None:
        # at least two rewrites, and more until the readers have searched during them (a
        # fast writer on a busy host could finish before the readers got going)
        with Index(db, engine) as writer:
            version = 0
            while version < 2 or (searches[0] <= 10 and version < 200):
                version += 1
                _write_docs(docs, version)
                summary = writer.add([docs])
                assert summary.updated == 12

    readers = [threading.Thread(target=reader, args=(k * 3,)) for k in range(3)]
    for th in readers:
        th.start()
    writing = threading.Thread(target=writer_run)
    writing.start()
    writing.join()
    stop.set()
    for th in readers:
        th.join()
    engine.close()
    assert searches[0] > 10 and not problems, problems[:5]


def test_a_search_reads_one_committed_state(tmp_path: Path) -> None:
    """A run committing between a search's ranking and its reading of rows must not make the
    document disappear from that search's results."""
    docs = tmp_path / "docs"
    docs.mkdir()
    _write_docs(docs, 0, n=3)
    db = tmp_path / "index.db"
    engine = FakeEngine()
    with Index(db, engine) as writer:
        writer.add([docs])
    reader = Index(db, engine, readonly=True)
    original = reader.store.chunk_rows

    def rows_after_a_commit(ids, *args):  # the writer replaces every document meanwhile
        _write_docs(docs, 1, n=3)
        with Index(db, engine) as w:
            assert w.add([docs]).updated == 3
        return original(ids, *args)

    reader.store.chunk_rows = rows_after_a_commit  # type: ignore[method-assign]
    hits = reader.search("codeword1", k=3, mode="keyword")
    reader.close()
    assert hits and hits[0].path.endswith("doc01.md") and "Revision 0" in hits[0].snippet


def test_one_index_used_by_two_threads_at_once_is_refused(tmp_path: Path) -> None:
    docs = tmp_path / "docs"
    docs.mkdir()
    _write_docs(docs, 0, n=80)
    inside, release = threading.Event(), threading.Event()

    def progress(_p: object) -> None:
        inside.set()
        release.wait(30)

    with Index(tmp_path / "index.db", FakeEngine()) as index:
        worker = threading.Thread(target=index.add, args=([docs],),
                                  kwargs={"progress": progress})
        worker.start()
        assert inside.wait(30)
        with pytest.raises(IndexFileError, match="another thread"):
            index.search("codeword1")
        release.set()
        worker.join()
        assert index.search("codeword1", mode="keyword")  # free again afterwards
        assert index.status()["documents"] == 80  # the same thread may call again


def test_decode_lock_lets_a_batch_decode_between_queries() -> None:
    """Queries coming back to back never starve indexing: after a query's decode, a waiting
    batch gets one decode."""
    lock = DecodeLock()
    order: list[str] = []

    def take(name: str, urgent: bool) -> None:
        with lock.hold(urgent):
            order.append(name)

    with lock.hold(urgent=True):
        bulk = threading.Thread(target=take, args=("bulk", False))
        bulk.start()
        _wait_for(lambda: lock.waiting == 1)
        query = threading.Thread(target=take, args=("query", True))
        query.start()
        _wait_for(lambda: lock.waiting == 2)
    bulk.join()
    query.join()
    assert order == ["bulk", "query"]
