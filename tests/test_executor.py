"""Executors: several batches in flight, finishing in any order, are written in order by the same
code as a local run (the same rows, vectors, counts); failures, cluster errors and cancels keep
the index consistent.  A thread pool stands in for Ray here (tests/test_ray.py runs Ray)."""

from __future__ import annotations

import os
import random
import shutil
import threading
import time
from collections.abc import Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest

from gguf_embed import ClusterError, EngineError
from gguf_embed.index import Index
from gguf_embed.protocol import EmbeddingEngine, Embeddings
from gguf_embed.testing import FakeEngine

from .test_index import orphans, rows


class _Job:
    def __init__(self, future: Future[Embeddings]) -> None:
        self.future = future
        self.cancelled = False

    def wait(self, timeout: float | None) -> bool:
        try:
            self.future.exception(timeout)
        except TimeoutError:
            return False
        return True

    def result(self) -> Embeddings:
        return self.future.result()

    def cancel(self) -> None:
        self.cancelled = True
        self.future.cancel()


class PoolExecutor:
    """Embeds on threads with random delays, so batches finish out of order; ``fail`` maps a
    batch number to the exception its job raises."""

    def __init__(self, window: int = 4, fail: dict[int, Exception] | None = None) -> None:
        self.window = window
        self.fail = fail or {}
        self.pool = ThreadPoolExecutor(3)
        self.jobs: list[_Job] = []
        self.engine: EmbeddingEngine | None = None
        self.model: str | None = None
        self.rng = random.Random(7)

    def start(self, engine: EmbeddingEngine, model: str | None) -> None:
        self.engine, self.model = engine, model

    def submit(self, texts: Sequence[str], dimensions: int | None) -> _Job:
        number, delay = len(self.jobs), self.rng.uniform(0, 0.02)
        engine = self.engine
        assert engine is not None

        def work() -> Embeddings:
            time.sleep(delay)
            if number in self.fail:
                raise self.fail[number]
            return engine.encode(list(texts), dimensions=dimensions)

        job = _Job(self.pool.submit(work))
        self.jobs.append(job)
        return job


@pytest.fixture
def docs(tmp_path: Path, corpora: Path) -> Path:
    """40 pages, and copies of some in another folder (their chunks are in other batches)."""
    folder = tmp_path / "docs"
    (folder / "copies").mkdir(parents=True)
    source = corpora / "tldr-linux" / "pages"
    names = sorted(os.listdir(source))[:40]
    for name in names:
        shutil.copy(source / name, folder / name)
    for name in names[:10]:
        shutil.copy(source / name, folder / "copies" / name)
    return folder


@pytest.fixture(autouse=True)
def small_batches(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("gguf_embed.indexer.BATCH_CHUNKS", 6)


def vectors(index: Index) -> dict[tuple[str, int], bytes]:
    return dict(((p, s), v) for p, s, v in index.store.conn.execute(
        "SELECT d.path, c.seq, v.embedding FROM chunks c JOIN documents d ON d.id = c.doc_id "
        "JOIN chunk_vectors v ON v.chunk_id = c.id"))


def build(db: Path, docs: Path, executor: object | None = None, **options: object) -> tuple:
    with Index(db, FakeEngine()) as index:
        summary = index.add([docs], executor=executor, **options)  # type: ignore[arg-type]
        return summary, rows(index), vectors(index), orphans(index)


def test_batches_in_flight_write_what_a_local_run_writes(tmp_path: Path, docs: Path) -> None:
    local, local_rows, local_vectors, _ = build(tmp_path / "local.db", docs)
    pool = PoolExecutor()
    summary, got_rows, got_vectors, holes = build(tmp_path / "pool.db", docs, pool)
    assert len(pool.jobs) > 8  # many batches, several in flight
    assert got_rows == local_rows and got_vectors == local_vectors
    assert not any(holes.values())
    for key in ("added", "chunks", "chunks_reused", "tokens_embedded", "failed"):
        assert summary.to_dict()[key] == local.to_dict()[key], key
    assert summary.chunks_reused > 0  # the copies borrowed vectors from batches in flight
    assert pool.model == "fake"


def test_a_failed_batch_fails_its_files_and_the_rest_is_written(tmp_path: Path,
                                                                docs: Path) -> None:
    pool = PoolExecutor(fail={2: EngineError("decode failed")})
    summary, got_rows, _, holes = build(tmp_path / "pool.db", docs, pool)
    assert summary.failed and all(r == "embedding failed: decode failed"
                                  for _, r in summary.failed)
    written = {r[0] for r in got_rows}
    assert written and not written & {p for p, _ in summary.failed}
    assert summary.added + len(summary.failed) == 50
    assert not any(holes.values())


def test_a_cluster_error_ends_the_run_and_a_rerun_completes(tmp_path: Path, docs: Path) -> None:
    db = tmp_path / "pool.db"
    pool = PoolExecutor(fail={5: ClusterError("the actor died 4 times")})
    with Index(db, FakeEngine()) as index, pytest.raises(ClusterError, match="died"):
        index.add([docs], executor=pool)
    with Index(db, FakeEngine()) as index:
        kept = len({r[0] for r in rows(index)})
        assert 0 < kept < 50 and not any(orphans(index).values())
    assert all(job.cancelled or job.future.done() for job in pool.jobs)
    summary, got_rows, got_vectors, _ = build(db, docs, PoolExecutor())
    assert summary.added == 50 - kept
    _, clean_rows, clean_vectors, _ = build(tmp_path / "clean.db", docs)
    assert got_rows == clean_rows and got_vectors == clean_vectors


def test_cancel_writes_the_batches_done_and_drops_the_rest(tmp_path: Path, docs: Path) -> None:
    db = tmp_path / "pool.db"
    cancel = threading.Event()
    pool = PoolExecutor(window=6)
    seen: list[int] = []

    def progress(p: object) -> None:
        seen.append(1)
        if len(seen) == 3:
            pool.jobs[0].future.result()  # one batch done, others maybe not: then cancel
            cancel.set()

    summary, got_rows, _, holes = build(db, docs, pool, cancel=cancel, progress=progress)
    assert summary.cancelled and 0 < summary.added < 50
    assert not any(holes.values())
    assert len({r[0] for r in got_rows}) == summary.added
    assert len(pool.jobs) < 12  # nothing new was sent after the cancel
    _, got_rows, got_vectors, _ = build(db, docs, PoolExecutor())
    _, clean_rows, clean_vectors, _ = build(tmp_path / "clean.db", docs)
    assert got_rows == clean_rows and got_vectors == clean_vectors


def test_a_vocab_only_engine_tokenizes_like_the_model_and_refuses_to_embed(
        minilm_path: Path) -> None:
    from gguf_embed import Engine
    from gguf_embed.index import identity

    text = "Hello wörld, 漢字: tar -xzf archive.tar.gz"
    with Engine(minilm_path) as full, Engine(minilm_path, vocab_only=True) as head:
        assert identity(head) == identity(full)
        np.testing.assert_array_equal(head.tokenize(text), full.tokenize(text))
        with pytest.raises(EngineError, match="vocab_only"):
            head.embed(text)
