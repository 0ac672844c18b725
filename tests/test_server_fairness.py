"""Fair scheduling in the server: a large request is embedded in pieces that other requests
interleave with, and a client that disconnects has its remaining pieces dropped.  Ordering and
engine-call counts, never time: the engine below decodes only when the test lets it."""

from __future__ import annotations

import json
import logging
import socket
import threading
import time
from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np
import pytest

from gguf_embed.batcher import SHARE_PIECES, Batcher
from gguf_embed.protocol import Embeddings, Prepared
from gguf_embed.server import ServerConfig, create_app
from gguf_embed.testing import FakeEngine

from .test_server import free_port


class GatedEngine(FakeEngine):
    """FakeEngine whose every engine call waits for one :meth:`step` of the test."""

    def __init__(self) -> None:
        super().__init__(max_tokens=64)
        self.gate = threading.Semaphore(0)
        self.entered = threading.Semaphore(0)

    def embed_prepared(self, prepared: Prepared | Sequence[np.ndarray], *,
                       dimensions: int | None = None, urgent: bool = False) -> Embeddings:
        self.entered.release()
        assert self.gate.acquire(timeout=30), "the test never let this call run"
        return super().embed_prepared(prepared, dimensions=dimensions, urgent=urgent)

    def wait_entered(self) -> None:
        assert self.entered.acquire(timeout=30), "no engine call came"

    def open(self) -> None:
        self.gate.release(10_000)


def seqs(n: int, start: int = 10) -> list[np.ndarray]:
    return [np.array([1, start + i, start + 2 * i + 1, 2], dtype=np.int32) for i in range(n)]


def test_a_small_request_completes_while_a_large_one_is_in_flight() -> None:
    engine = GatedEngine()
    batcher = Batcher(engine, window=0, share_tokens=40)  # 10 sequences of 4 tokens a step
    try:
        big_seqs = seqs(100)
        big = batcher.submit(big_seqs, None)
        engine.wait_entered()  # the big request's first piece is in the engine
        small = batcher.submit(seqs(1, start=500), None)
        engine.gate.release()  # piece 1 of 10
        engine.wait_entered()
        engine.gate.release()  # the small one, before the big one's next piece
        small_vectors = small.result(timeout=30)
        assert not big.done()  # the small one did not wait for the 2,048-input kind
        assert engine.calls[:2] == [10, 1]
        engine.open()
        vectors = big.result(timeout=30)
    finally:
        engine.open()
        batcher.close()
    np.testing.assert_allclose(vectors, FakeEngine().embed_prepared(big_seqs).vectors,
                               atol=1e-6)
    np.testing.assert_allclose(small_vectors,
                               FakeEngine().embed_prepared(seqs(1, start=500)).vectors)
    assert engine.calls == [10, 1] + [10] * 9


def test_small_requests_shrink_the_pieces_of_a_large_one_and_cannot_starve_it() -> None:
    engine = GatedEngine()
    batcher = Batcher(engine, window=0, share_tokens=40)
    try:
        big = batcher.submit(seqs(100), None)
        smalls = []
        for i in range(3):  # a small request arrives during each step
            engine.wait_entered()
            smalls.append(batcher.submit(seqs(1, start=600 + i), None))
            engine.gate.release()
        engine.open()
        for future in [*smalls, big]:
            future.result(timeout=30)
    finally:
        engine.open()
        batcher.close()
    # a big piece (10 sequences), the first small one alone, a big piece halved (5): its turn
    # comes even with small ones waiting; the two small ones that came meanwhile together;
    # then the big one alone, its pieces (halved again, to 10 tokens) doubling back: 5, 10
    assert engine.calls[:6] == [10, 1, 5, 2, 5, 10]
    assert sum(engine.calls) == 103


def test_a_cancelled_request_has_its_remaining_pieces_dropped() -> None:
    engine = GatedEngine()
    batcher = Batcher(engine, window=0, share_tokens=40)
    try:
        big = batcher.submit(seqs(100), None)
        engine.wait_entered()
        assert big.cancel()
        other = batcher.submit(seqs(2, start=300), None)
        engine.open()
        assert other.result(timeout=30).shape == (2, engine.dims)
    finally:
        engine.open()
        batcher.close()
    assert engine.calls == [10, 2]  # one piece of the cancelled request, then the other


def test_pieces_keep_dimensions_and_queries_first() -> None:
    engine = FakeEngine()
    batcher = Batcher(engine, window=0.2, share_tokens=8)
    try:
        docs = batcher.submit(seqs(5), 16)
        query = batcher.submit(seqs(1, start=77), None, urgent=True)
        got = docs.result(timeout=30)
        assert query.result(timeout=30).shape == (1, engine.dims)
    finally:
        batcher.close()
    np.testing.assert_allclose(got, FakeEngine().embed_prepared(seqs(5), dimensions=16).vectors,
                               atol=1e-6)
    assert engine.urgent_calls[0] is True and engine.calls == [1, 2, 2, 1]


class LanedEngine(GatedEngine):
    """GatedEngine with a side lane (as ``Engine.embed_side``): side calls are not gated, and
    the thread count asked for each main-lane call is recorded."""

    n_threads = 2
    side_threads = 1

    def __init__(self) -> None:
        super().__init__()
        self.side_calls: list[int] = []
        self.threads: list[int | None] = []

    def embed_prepared(self, prepared: Prepared | Sequence[np.ndarray], *,
                       dimensions: int | None = None, urgent: bool = False,
                       threads: int | None = None) -> Embeddings:
        self.threads.append(threads)
        return super().embed_prepared(prepared, dimensions=dimensions, urgent=urgent)

    def embed_side(self, prepared: Prepared | Sequence[np.ndarray], *,
                   dimensions: int | None = None) -> Embeddings:
        self.side_calls.append(len(prepared))
        return FakeEngine(max_tokens=64).embed_prepared(prepared, dimensions=dimensions)


def test_a_small_request_does_not_wait_for_the_piece_in_flight_with_a_side_lane() -> None:
    engine = LanedEngine()
    batcher = Batcher(engine, window=0, share_tokens=40)
    try:
        big_seqs = seqs(100)
        big = batcher.submit(big_seqs, None)
        engine.wait_entered()  # the big request's first piece holds the main lane
        small = batcher.submit(seqs(2, start=500), None, urgent=True)
        small_vectors = small.result(timeout=30)  # while that piece is still in the engine
        assert engine.calls == [] and not big.done()  # the first piece is still held
        for _ in range(SHARE_PIECES + 2):  # the next pieces leave the side lane its thread
            engine.gate.release()
            engine.wait_entered()
        engine.open()
        vectors = big.result(timeout=30)
    finally:
        engine.open()
        batcher.close()
    assert engine.side_calls == [2] and batcher.side_decodes == 1
    assert engine.calls == [10] * 10  # the big one's pieces only: whole pieces, not shrunk
    assert engine.threads[:SHARE_PIECES + 2] == [None, *[1] * SHARE_PIECES, None]
    np.testing.assert_allclose(vectors, FakeEngine().embed_prepared(big_seqs).vectors,
                               atol=1e-6)
    np.testing.assert_allclose(small_vectors,
                               FakeEngine().embed_prepared(seqs(2, start=500)).vectors)


def test_without_a_large_request_the_side_lane_is_not_used() -> None:
    engine = LanedEngine()
    engine.open()
    batcher = Batcher(engine, window=0.05, share_tokens=40)
    try:
        futures = [batcher.submit(seqs(2, start=10 * i), None) for i in range(5)]
        for future in futures:
            future.result(timeout=30)
        cancelled = batcher.submit(seqs(100), None)
        cancelled.cancel()
        after = batcher.submit(seqs(1, start=900), None)  # the large one is gone: main lane
        after.result(timeout=30)
    finally:
        batcher.close()
    assert engine.side_calls == [] and engine.threads == [None] * len(engine.calls)
    assert sum(engine.calls) <= 11 and engine.calls[0] == 10  # the five shared one decode


@pytest.fixture(params=[0.0, 0.004], ids=["lock-path", "batcher"])
def gated_server(request: pytest.FixtureRequest) -> Iterator[tuple[GatedEngine, int]]:
    import uvicorn

    engine = GatedEngine()
    engine.options = type("Options", (), {"batch_tokens": 40})()  # type: ignore[attr-defined]
    port = free_port()
    app = create_app(engine, ServerConfig(model_name="fake", port=port,
                                          batch_window=request.param))
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port,
                                           log_level="error"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started:
        assert time.monotonic() < deadline
        time.sleep(0.02)
    try:
        yield engine, port
    finally:
        engine.open()
        server.should_exit = True
        thread.join(timeout=10)


def test_a_disconnected_clients_remaining_work_is_not_embedded(
        gated_server: tuple[GatedEngine, int], caplog: pytest.LogCaptureFixture) -> None:
    engine, port = gated_server
    texts = [f"word{i} other{i}" for i in range(100)]  # 4 tokens each: 10 pieces of 10
    body = json.dumps({"input": texts}).encode()
    with caplog.at_level(logging.INFO, logger="gguf_embed.server"):
        with socket.create_connection(("127.0.0.1", port)) as sock:
            sock.sendall(b"POST /v1/embeddings HTTP/1.1\r\nHost: 127.0.0.1:%d\r\n"
                         b"Content-Type: application/json\r\nContent-Length: %d\r\n\r\n%s"
                         % (port, len(body), body))
            engine.wait_entered()  # the first piece is in the engine; the client leaves
        deadline = time.monotonic() + 30
        while "client disconnected" not in caplog.text:
            assert time.monotonic() < deadline, "the server did not notice the disconnect"
            time.sleep(0.02)
    engine.open()
    import httpx  # a request after it: served after any piece still queued (FIFO)

    reply = httpx.post(f"http://127.0.0.1:{port}/v1/embeddings", json={"input": "tea"})
    assert reply.status_code == 200
    assert engine.calls == [10, 1]  # 1 of the 10 pieces, then the next request


def test_side_lane_with_a_real_engine_gives_the_vectors_of_the_main_lane(
        qwen_path: Path) -> None:
    """Two llama.cpp contexts of one model decoding at once (a large request's piece in the
    main context, a small request in the side lane) give the vectors each gives alone."""
    from gguf_embed import Engine

    with Engine(qwen_path, n_threads=2, n_gpu_layers=0) as engine:
        assert engine.side_threads == 1
        big = engine.prepare([f"document {i} about green tea and black coffee " * 6
                              for i in range(400)])
        small = engine.prepare(["a query about tea"], query=True)
        expected_big = engine.embed_prepared(big).vectors
        expected_small = engine.embed_prepared(small).vectors
        batcher = Batcher(engine, window=0)
        try:
            large = batcher.submit(big.sequences, None)
            deadline = time.monotonic() + 60
            while batcher.decodes == 0:  # its first piece is in the engine
                assert time.monotonic() < deadline
                time.sleep(0.001)
            got_small = batcher.submit(small.sequences, None, urgent=True).result(timeout=60)
            got_big = large.result(timeout=120)
            assert not large.cancelled() and batcher.side_decodes == 1
        finally:
            batcher.close()
    assert float((got_small * expected_small).sum()) >= 0.9999
    assert float((got_big * expected_big).sum(axis=1).min()) >= 0.9999
