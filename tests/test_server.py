"""The HTTP server against the official `openai` client, on 127.0.0.1 only."""

from __future__ import annotations

import base64
import socket
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import numpy as np
import openai
import pytest

from gguf_embed import Engine
from gguf_embed.index import Index
from gguf_embed.server import ServerConfig, create_app


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Live:
    def __init__(self, engine: Engine, reranker: object = None, model_name: str = "tiny-qwen3",
                 **kwargs: object) -> None:
        import uvicorn

        self.port = free_port()
        self.config = ServerConfig(model_name=model_name, port=self.port, **kwargs)
        self.app = create_app(engine, self.config, reranker)
        self.server = uvicorn.Server(uvicorn.Config(self.app, host="127.0.0.1", port=self.port,
                                                    log_level="error"))
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def __enter__(self) -> Live:
        self.thread.start()
        deadline = time.monotonic() + 20
        while not self.server.started:
            assert time.monotonic() < deadline, "server did not start"
            time.sleep(0.02)
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=10)


@pytest.fixture(scope="module")
def engine(qwen_path: Path) -> Iterator[Engine]:
    with Engine(qwen_path) as e:
        yield e


@pytest.fixture(scope="module")
def index_db(tmp_path_factory, engine: Engine, corpora: Path) -> Path:
    docs = tmp_path_factory.mktemp("docs")
    for page in sorted((corpora / "tldr-linux" / "pages").glob("b*.md"))[:40]:
        (docs / page.name).write_text(page.read_text())
    db = docs.parent / "server.db"
    with Index(db, engine) as index:
        index.add([docs])
    return db


@pytest.fixture(scope="module")
def live(engine: Engine, index_db: Path) -> Iterator[Live]:
    with Live(engine, index_path=str(index_db)) as server:
        yield server


@pytest.fixture(scope="module")
def client(live: Live) -> openai.OpenAI:
    return openai.OpenAI(base_url=live.url + "/v1", api_key="unused", max_retries=0)


TEXTS = ["list files", "compress a folder with tar", "Grüße aus Köln"]


def test_base64_default_of_the_official_client(client: openai.OpenAI, engine: Engine) -> None:
    response = client.embeddings.create(model="tiny-qwen3", input=TEXTS)  # asks for base64
    got = np.array([d.embedding for d in response.data], dtype=np.float32)
    np.testing.assert_allclose(got, engine.embed(TEXTS), atol=1e-6)
    assert [d.index for d in response.data] == [0, 1, 2]
    assert response.model == "tiny-qwen3" and response.object == "list"
    tokens = sum(len(engine.tokenize(t)) for t in TEXTS)
    assert response.usage.prompt_tokens == response.usage.total_tokens == tokens


def test_float_format_and_dimensions(client: openai.OpenAI, engine: Engine) -> None:
    response = client.embeddings.create(model="tiny-qwen3", input="list files",
                                        encoding_format="float", dimensions=64)
    vec = np.array(response.data[0].embedding, dtype=np.float32)
    assert vec.shape == (64,)
    np.testing.assert_allclose(vec, engine.embed(["list files"], dimensions=64)[0], atol=1e-6)


def test_raw_base64_is_little_endian_float32(live: Live, engine: Engine) -> None:
    body = httpx.post(live.url + "/v1/embeddings", json={"input": "x",
                                                         "encoding_format": "base64"}).json()
    raw = np.frombuffer(base64.b64decode(body["data"][0]["embedding"]), dtype="<f4")
    np.testing.assert_allclose(raw, engine.embed(["x"])[0], atol=1e-6)


def test_token_id_inputs(engine: Engine) -> None:
    ids = engine.tokenize("list files")[:-1].tolist()
    with Live(engine, token_ids="model") as own:  # by default token ids are refused
        client = openai.OpenAI(base_url=own.url + "/v1", api_key="unused", max_retries=0)
        one = client.embeddings.create(model="tiny-qwen3", input=ids)
        many = client.embeddings.create(model="tiny-qwen3", input=[ids, ids[:2]])
    want = engine.embed(["list files"])[0]
    np.testing.assert_allclose(one.data[0].embedding, want, atol=1e-6)
    np.testing.assert_allclose(many.data[0].embedding, want, atol=1e-6)
    assert len(many.data) == 2


def test_query_instruction(live: Live, engine: Engine, client: openai.OpenAI) -> None:
    response = client.embeddings.create(model="tiny-qwen3", input="find big files",
                                        extra_body={"input_type": "query", "task": "T"})
    np.testing.assert_allclose(response.data[0].embedding,
                               engine.embed(["find big files"], query=True, task="T")[0],
                               atol=1e-6)


@pytest.mark.parametrize("kwargs,param", [
    ({"input": ""}, "input"),
    ({"input": []}, "input"),
    ({"input": ["ok", ""]}, "input"),
    ({"input": ["x"] * 2049}, "input"),
    ({"input": "word " * 5000}, "input"),
    ({"input": "x", "dimensions": 0}, "dimensions"),
    ({"input": "x", "dimensions": 100_000}, "dimensions"),
    ({"input": [[10**9]]}, "input"),
    ({"input": [[1, 2, 3]]}, "input"),  # token ids: refused unless --token-ids
])
def test_bad_requests_are_400(client: openai.OpenAI, kwargs: dict, param: str) -> None:
    with pytest.raises(openai.BadRequestError) as info:
        client.embeddings.create(model="tiny-qwen3", **kwargs)
    error = info.value.body
    assert error["param"] == param and error["type"] == "invalid_request_error"
    assert error["message"] and "code" in error


def test_too_long_code(client: openai.OpenAI) -> None:
    with pytest.raises(openai.BadRequestError) as info:
        client.embeddings.create(model="tiny-qwen3", input="word " * 5000)
    assert info.value.body["code"] == "context_length_exceeded"


def test_unknown_model_is_answered_unless_strict(client: openai.OpenAI,
                                                 engine: Engine) -> None:
    response = client.embeddings.create(model="text-embedding-3-small", input="x")
    assert response.model == "tiny-qwen3"  # what served it, as llama-server
    with Live(engine, strict_model_names=True) as strict:
        client = openai.OpenAI(base_url=strict.url + "/v1", api_key="unused", max_retries=0)
        with pytest.raises(openai.NotFoundError) as info:
            client.embeddings.create(model="text-embedding-3-small", input="x")
    assert info.value.body["code"] == "model_not_found"


def test_bad_json_and_body_limit(live: Live, engine: Engine) -> None:
    response = httpx.post(live.url + "/v1/embeddings", content=b"{not json",
                          headers={"content-type": "application/json"})
    assert response.status_code == 400
    assert response.json()["error"]["code"] == "invalid_json"
    assert httpx.post(live.url + "/v1/embeddings", json=["a"]).status_code == 400
    with Live(engine, max_body=1000) as small:
        big = httpx.post(small.url + "/v1/embeddings", json={"input": "x" * 5000})
        assert big.status_code == 413 and big.json()["error"]["code"] == "request_too_large"


def test_api_key(engine: Engine) -> None:
    with Live(engine, api_key="s3cret") as secured:
        bad = openai.OpenAI(base_url=secured.url + "/v1", api_key="wrong", max_retries=0)
        with pytest.raises(openai.AuthenticationError):
            bad.embeddings.create(model="tiny-qwen3", input="x")
        assert httpx.get(secured.url + "/v1/models").status_code == 401
        good = openai.OpenAI(base_url=secured.url + "/v1", api_key="s3cret", max_retries=0)
        assert len(good.embeddings.create(model="tiny-qwen3", input="x").data) == 1


def test_dns_rebinding_and_origins(live: Live) -> None:
    url = live.url + "/health"
    assert httpx.get(url).status_code == 200
    assert httpx.get(url, headers={"host": "evil.example"}).status_code == 403
    assert httpx.get(url, headers={"host": f"localhost:{live.port}"}).status_code == 200
    assert httpx.get(url, headers={"host": f"127.0.0.1:{live.port + 1}"}).status_code == 403
    assert httpx.get(url, headers={"origin": "http://evil.example"}).status_code == 403
    assert httpx.get(url, headers={"origin": "http://localhost:3000"}).status_code == 200


def test_models_health_and_search(live: Live, client: openai.OpenAI, index_db: Path,
                                  engine: Engine) -> None:
    assert [m.id for m in client.models.list().data] == ["tiny-qwen3"]
    health = httpx.get(live.url + "/health").json()
    assert health["status"] == "ok" and health["dims"] == engine.dims
    body = httpx.post(live.url + "/v1/search", json={"query": "compress files", "k": 3})
    assert body.status_code == 200
    hits = body.json()["data"]
    with Index(index_db, engine, readonly=True) as index:
        want = [r.to_dict() for r in index.search("compress files", k=3)]
    assert [h["chunk_id"] for h in hits] == [w["chunk_id"] for w in want]
    assert {"path", "score", "start_line", "end_line", "snippet", "chunk_id"} <= set(hits[0])
    bad = httpx.post(live.url + "/v1/search", json={"query": "", "k": 3})
    assert bad.status_code == 400 and bad.json()["error"]["param"] == "query"
    assert httpx.post(live.url + "/v1/search", json={"query": "x", "mode": "nope"}
                      ).status_code == 400


def test_load_32_clients_batched_and_correct(live: Live, engine: Engine, corpora: Path) -> None:
    """Bounded loopback load: 32 concurrent clients, 2,048 requests, no 5xx, every vector the
    engine's, and far fewer decodes than requests."""
    pages = sorted((corpora / "tldr-linux" / "pages").glob("c*.md"))[:64]
    texts = [p.read_text()[:300] for p in pages]
    want = engine.embed(texts)
    batcher = live.app.state.batcher
    before = batcher.decodes

    def worker(n: int) -> list[tuple[int, int, float]]:
        out = []
        with httpx.Client(base_url=live.url, timeout=60) as http:
            for j in range(64):
                i = (n * 7 + j) % len(texts)
                r = http.post("/v1/embeddings", json={"input": texts[i],
                                                      "encoding_format": "float"})
                cos = float(np.dot(r.json()["data"][0]["embedding"], want[i])) \
                    if r.status_code == 200 else 0.0
                out.append((r.status_code, i, cos))
        return out

    start = time.monotonic()
    with ThreadPoolExecutor(32) as pool:
        results = [row for rows in pool.map(worker, range(32)) for row in rows]
    assert time.monotonic() - start < 600
    assert len(results) == 2048
    assert all(status == 200 for status, _, _ in results)
    assert min(cos for _, _, cos in results) >= 0.9999
    assert batcher.decodes - before < 2048 / 2  # requests really shared decodes


@pytest.mark.parametrize("window", [0.0, 0.004])  # the lock path, then the batcher
def test_query_inputs_go_first_on_a_shared_engine(window: float) -> None:
    """/v1/embeddings with "input_type": "query" asks the engine for an urgent decode, ahead of
    document batches (a --watch indexer's) waiting on the same engine; documents do not."""
    from starlette.testclient import TestClient

    from gguf_embed.testing import FakeEngine

    engine = FakeEngine()
    config = ServerConfig(model_name="fake", batch_window=window)
    with TestClient(create_app(engine, config), base_url="http://127.0.0.1:8000") as http:
        assert http.post("/v1/embeddings", json={"input": ["espresso"],
                                                 "input_type": "query"}).status_code == 200
        assert http.post("/v1/embeddings", json={"input": ["a page", "another"]}
                         ).status_code == 200
    assert engine.urgent_calls == [True, False]


def test_batcher_serves_the_queries_of_a_window_first() -> None:
    from gguf_embed.batcher import Batcher
    from gguf_embed.testing import FakeEngine

    engine = FakeEngine()
    batcher = Batcher(engine, window=0.5)
    try:
        docs = batcher.submit([np.array([1, 5, 2]), np.array([1, 6, 2])], None)
        query = batcher.submit([np.array([1, 7, 2])], None, urgent=True)
        assert query.result(timeout=10).shape[0] == 1 and docs.result(timeout=10).shape[0] == 2
    finally:
        batcher.close()
    assert engine.urgent_calls == [True, False] and engine.calls == [1, 2]
