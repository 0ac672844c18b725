"""Freeing the model: Engine.close, and IdleEngine's unload after idle time and reload."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from gguf_embed import Engine, IdleEngine, Index
from gguf_embed.cli import cli
from gguf_embed.errors import EngineError


def _wait_for(predicate, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.01)


def test_closed_engine_frees_the_model_and_says_so(minilm_path: Path) -> None:
    engine = Engine(minilm_path)
    engine.embed(["warm"])
    engine.close()
    engine.close()  # idempotent
    assert engine.closed and engine._model is None and engine._packed is None
    for call in (lambda: engine.embed(["x"]), lambda: engine.tokenize("x"), engine.info,
                 lambda: engine.embed_prepared([np.array([1, 2, 3], dtype=np.int32)])):
        with pytest.raises(EngineError, match="closed"):
            call()


def test_close_waits_for_a_decode_in_flight(minilm_path: Path) -> None:
    engine = Engine(minilm_path)
    results: list[object] = []

    def work() -> None:
        try:
            results.append(engine.embed([f"text {i} " * 30 for i in range(200)]))
        except EngineError as exc:  # closed between two decodes: a clean error, no crash
            results.append(exc)

    worker = threading.Thread(target=work)
    worker.start()
    _wait_for(lambda: engine._packed is not None)
    engine.close()
    worker.join()
    assert engine._model is None
    assert isinstance(results[0], (np.ndarray, EngineError))


def test_idle_engine_unloads_and_reloads(minilm_path: Path) -> None:
    reference = Engine(minilm_path)
    expected = reference.embed(["hello world"], query=True)
    reference.close()
    with IdleEngine(minilm_path, unload_after=0.2) as engine:
        assert engine.loaded and engine.loads == 1
        assert engine.dims == 384 and engine.max_tokens == 512
        first = engine.embed(["hello world"], query=True)
        _wait_for(lambda: not engine.loaded)
        assert engine.dims == 384  # what describes the model needs no reload
        second = engine.embed(["hello world"], query=True)
        assert engine.loads == 2 and engine.last_load_seconds > 0
        assert np.allclose(first, expected, atol=1e-5)
        assert np.allclose(second, expected, atol=1e-5)
    assert engine.closed and not engine.loaded
    with pytest.raises(EngineError, match="closed"):
        engine.embed(["again"])


def test_loaded_turns_false_only_once_the_model_is_freed(minilm_path: Path,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    """Whoever watches ``loaded`` (a memory meter, a benchmark) must not see the model gone
    while its memory is still held: the timer frees it first, then says so."""
    freed: list[bool] = []
    real_close = Engine.close

    def slow_close(self: Engine) -> None:
        time.sleep(0.3)  # a big model takes a while to give its memory back
        real_close(self)
        freed.append(True)

    monkeypatch.setattr(Engine, "close", slow_close)
    with IdleEngine(minilm_path, unload_after=0.05) as engine:
        engine.embed(["warm"])
        _wait_for(lambda: not engine.loaded)
        assert freed, "loaded was false while the model was still being freed"


def test_idle_engine_never_unloads_during_a_call(minilm_path: Path) -> None:
    with IdleEngine(minilm_path, unload_after=0.05) as engine:
        calls = [0]

        def busy() -> None:
            for _ in range(20):
                engine.embed([f"text {i}" for i in range(50)])
                calls[0] += 1

        threads = [threading.Thread(target=busy) for _ in range(2)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert calls[0] == 40


def test_index_over_an_idle_engine(tmp_path: Path, minilm_path: Path) -> None:
    docs = tmp_path / "docs"
    docs.mkdir()
    (docs / "a.md").write_text("Rotating log files with logrotate every week.\n")
    (docs / "b.md").write_text("Baking sourdough bread needs a starter.\n")
    with IdleEngine(minilm_path, unload_after=0.2) as engine:
        with Index(tmp_path / "i.db", engine) as index:
            assert index.add([docs]).added == 2
        _wait_for(lambda: not engine.loaded)
        with Index(tmp_path / "i.db", engine, readonly=True) as index:
            hits = index.search("how do I rotate logs", k=1, mode="vector")
        assert hits[0].path.endswith("a.md") and engine.loads == 2


def test_server_reloads_after_unload(minilm_path: Path) -> None:
    from starlette.testclient import TestClient

    from gguf_embed.server import ServerConfig, create_app

    with IdleEngine(minilm_path, unload_after=0.2) as engine:
        app = create_app(engine, ServerConfig(model_name="minilm", batch_window=0))
        with TestClient(app, base_url="http://127.0.0.1:8000") as client:
            _wait_for(lambda: not engine.loaded)
            assert client.get("/health").json()["loaded"] is False
            response = client.post("/v1/embeddings", json={"input": ["hello"]})
            assert response.status_code == 200, response.text
            assert len(response.json()["data"][0]["embedding"]) == 384
            assert engine.loads == 2 and client.get("/health").json()["loaded"] is True


def test_serve_has_unload_after() -> None:
    result = CliRunner().invoke(cli, ["serve", "--help"])
    assert result.exit_code == 0 and "--unload-after" in result.stdout
    bad = CliRunner().invoke(cli, ["serve", "--unload-after", "0"])
    assert bad.exit_code == 2


def test_idle_engine_has_the_side_lane_of_its_engine(minilm_path: Path) -> None:
    """serve --unload-after serves through IdleEngine: the batcher finds the side lane there
    too (small requests beside a large one), and it reloads the model like any call."""
    from gguf_embed.batcher import Batcher

    with IdleEngine(minilm_path, unload_after=0.2, n_threads=2, n_gpu_layers=0) as engine, \
            Engine(minilm_path) as plain:
        assert engine.side_threads == 1
        batcher = Batcher(engine)
        assert batcher.side_lane
        batcher.close()
        prepared = plain.prepare(["hello world"])
        _wait_for(lambda: not engine.loaded)
        side = engine.embed_side(prepared)
        assert engine.loads == 2
        np.testing.assert_allclose(side.vectors, plain.embed_prepared(prepared).vectors,
                                   atol=3e-3)
