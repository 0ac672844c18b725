"""Hostile requests against the HTTP server: a 400 with OpenAI's envelope for every malformed
request (never a 500), and an unexpected failure logged with its traceback while the client
gets the 500 envelope."""

from __future__ import annotations

import logging
import os
from pathlib import Path

import pytest
from starlette.testclient import TestClient

from gguf_embed import Engine
from gguf_embed.index import Index
from gguf_embed.server import ServerConfig, create_app

from .test_bad_input import write_docs

URL = "http://127.0.0.1:8000"


@pytest.fixture(scope="module")
def index_db(tmp_path_factory: pytest.TempPathFactory, qwen: Engine) -> Path:
    root = tmp_path_factory.mktemp("served")
    docs = write_docs(root / "docs", {"a.md": "espresso and croissant", "b.md": "green tea"})
    with Index(root / "i.db", qwen) as index:
        index.add([docs])
    return root / "i.db"


@pytest.fixture(scope="module")
def client(qwen: Engine, index_db: Path) -> TestClient:
    config = ServerConfig(model_name="tiny-qwen3", index_path=str(index_db), batch_window=0)
    return TestClient(create_app(qwen, config), base_url=URL, raise_server_exceptions=False)


def embed_raw(client: TestClient, body: str, **headers: str) -> tuple[int, dict]:
    response = client.post("/v1/embeddings", content=body.encode(),
                           headers={"content-type": "application/json", **headers})
    return response.status_code, response.json()


@pytest.mark.parametrize("body,param", [
    ('{"input": "\\ud800"}', "input"),                          # a lone surrogate
    ('{"input": ["ok", "x\\udce9"]}', "input"),
    ('{"input": "x", "task": "\\udfff", "input_type": "query"}', "task"),
    ('{"input": ' + "[" * 100_000 + "]" * 100_000 + "}", None),  # nested 100,000 deep
    ("[" * 100_000 + "]" * 100_000, None),
    ('{"input": [9223372036854775808]}', "input"),              # token id 2**63
    ('{"input": [[1, 18446744073709551616]]}', "input"),
    ('{"input": [[-9223372036854775809]]}', "input"),
    ('{"input": "x", "model": ["tiny-qwen3"]}', "model"),       # model as a list
    ('{"input": "x", "model": {"id": 1}}', "model"),
    ('{"input": "x", "dimensions": ' + "9" * 5000 + "}", None),  # 5,000 digits
])
def test_malformed_embedding_requests_are_400(client: TestClient, body: str,
                                              param: str | None) -> None:
    status, data = embed_raw(client, body)
    assert status == 400, data
    assert data["error"]["type"] == "invalid_request_error" and data["error"]["message"]
    assert data["error"]["param"] == param


@pytest.mark.parametrize("host", ["127.0.0.1:abc", "127.0.0.1:99999999", "[::1"])
def test_unparsable_host_header_is_400(client: TestClient, host: str) -> None:
    response = client.get("/health", headers={"host": host})
    assert response.status_code == 400
    assert response.json()["error"]["code"] == "invalid_host"


@pytest.mark.parametrize("body,param", [
    ({"query": "espresso", "path": "a" * 100_000}, "path"),
    ({"query": "espresso", "path": "*" * 100_000, "mode": "keyword"}, "path"),
    ({"query": "espresso \ud800"}, "query"),
    ({"query": "espresso", "mode": ["vector"]}, "mode"),
])
def test_malformed_search_requests_are_400(client: TestClient, body: dict,
                                           param: str) -> None:
    import json

    response = client.post("/v1/search", content=json.dumps(body).encode(),
                           headers={"content-type": "application/json"})
    assert response.status_code == 400, response.text
    assert response.json()["error"]["param"] == param


def test_search_results_with_non_utf8_file_names(qwen: Engine, tmp_path: Path) -> None:
    docs = write_docs(tmp_path / "docs", {"a.md": "green tea"})
    with open(os.path.join(os.fsencode(docs), b"caf\xe9.md"), "wb") as fh:
        fh.write(b"espresso menu")
    with Index(tmp_path / "i.db", qwen) as index:
        index.add([docs])
    config = ServerConfig(model_name="tiny-qwen3", index_path=str(tmp_path / "i.db"),
                          batch_window=0)
    client = TestClient(create_app(qwen, config), base_url=URL, raise_server_exceptions=False)
    response = client.post("/v1/search", json={"query": "espresso menu", "mode": "keyword"})
    assert response.status_code == 200, response.text
    paths = [os.fsencode(hit["path"]) for hit in response.json()["data"]]
    assert any(p.endswith(b"caf\xe9.md") for p in paths)


def test_no_file_paths_in_health(client: TestClient, index_db: Path) -> None:
    health = client.get("/health").json()
    assert health["index"] == index_db.name


def test_unexpected_errors_are_logged_with_a_traceback(
        client: TestClient, qwen: Engine, monkeypatch: pytest.MonkeyPatch,
        caplog: pytest.LogCaptureFixture) -> None:
    def broken(text: str) -> object:
        raise RuntimeError("tokenizer exploded")

    monkeypatch.setattr(qwen, "tokenize", broken)
    with caplog.at_level(logging.ERROR, logger="gguf_embed.server"):
        response = client.post("/v1/embeddings", json={"input": "x"})
    assert response.status_code == 500
    assert response.json()["error"] == {"message": "internal error", "type": "server_error",
                                        "param": None, "code": "internal_error"}
    records = [r for r in caplog.records if r.name == "gguf_embed.server"]
    assert records and records[0].exc_info and "/v1/embeddings" in records[0].getMessage()
    assert "tokenizer exploded" in caplog.text and "Traceback" in caplog.text
