"""The remote embedding engine (--embed-url): against our own `serve` on 127.0.0.1 with the tiny
test models, and against httpx.MockTransport stubs for retries, keys and odd answers."""

from __future__ import annotations

import json
import shutil
import socket
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import apsw
import httpx
import numpy as np
import pytest
from click.testing import CliRunner

from gguf_embed import Engine, EngineUnavailable, Index, RemoteEngine
from gguf_embed import remote_engine as remote_module
from gguf_embed.cli import cli
from gguf_embed.errors import EngineError, InputError
from gguf_embed.models import QWEN3_QUERY, QWEN3_TASK
from gguf_embed.remote_engine import catalog_spec, clean_url
from gguf_embed.remote_identity import identity_problem
from tests.test_server import Live as ServerLive

KEY = "sk-test-0123456789-secret"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Live(ServerLive):
    """`gguf-embed serve`'s app in a thread on a free loopback port, serving ``name``."""

    def __init__(self, engine: Engine, name: str, **kwargs: Any) -> None:
        super().__init__(engine, model_name=name, **kwargs)


@pytest.fixture(scope="module")
def qwen_server(qwen: Engine) -> Iterator[Live]:
    with Live(qwen, "tiny-qwen3") as live:
        yield live


@pytest.fixture(scope="module")
def minilm_server(minilm: Engine) -> Iterator[Live]:
    with Live(minilm, "minilm", api_key=KEY) as live:
        yield live


@pytest.fixture(scope="module")
def docs(tmp_path_factory: pytest.TempPathFactory, corpora: Path) -> Path:
    folder = tmp_path_factory.mktemp("remote-docs")
    for page in sorted((corpora / "tldr-linux" / "pages").glob("t*.md"))[:30]:
        shutil.copy(page, folder / page.name)
    long = "\n".join(f"line {i}: " + "tar gzip archive compress " * (i % 12) for i in range(120))
    (folder / "long.md").write_text(long)  # several chunks, one long line per chunk budget
    return folder


def rows(db: Path) -> dict[tuple[str, int], tuple[str, int, int, int, np.ndarray]]:
    conn = apsw.Connection(str(db), flags=apsw.SQLITE_OPEN_READONLY)
    conn.enable_load_extension(True)
    import sqlite_vec

    conn.load_extension(sqlite_vec.loadable_path())
    out = {}
    for path, seq, text, start, end, n, blob in conn.execute(
            "SELECT d.path, c.seq, c.text, c.start_line, c.end_line, c.n_tokens, v.embedding "
            "FROM chunks c JOIN documents d ON d.id = c.doc_id "
            "JOIN chunk_vectors v ON v.chunk_id = c.id"):
        out[(Path(path).name, seq)] = (text, start, end, n, np.frombuffer(blob, dtype="<f4"))
    conn.close()
    return out


# ---------------------------------------------------------------- against our own serve
@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory, docs: Path, qwen_path: Path,
          qwen_server: Live) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("remote-dbs")
    local, remote = root / "local.db", root / "remote.db"
    result = CliRunner().invoke(cli, ["index", str(docs), "--db", str(local), "-m",
                                      str(qwen_path), "--json"])
    assert result.exit_code == 0, result.stderr
    result = CliRunner().invoke(cli, ["index", str(docs), "--db", str(remote), "--embed-url",
                                      qwen_server.url + "/v1", "--embed-batch", "7", "--json"])
    assert result.exit_code == 0, result.stderr
    assert json.loads(result.stdout)["added"] == 31
    return local, remote


def test_remote_index_has_the_local_chunks_and_vectors(built: tuple[Path, Path]) -> None:
    local, remote = rows(built[0]), rows(built[1])
    assert len(local) >= 35 and local.keys() == remote.keys()
    for key, (text, start, end, n, vec) in local.items():
        r_text, r_start, r_end, r_n, r_vec = remote[key]
        assert (r_text, r_start, r_end, r_n) == (text, start, end, n), key
        assert float(vec @ r_vec) >= 0.999, key


def test_remote_index_records_the_server(built: tuple[Path, Path], qwen: Engine,
                                         qwen_server: Live) -> None:
    with Index(built[1], readonly=True) as index:
        meta = index.meta
    assert meta["remote"]["kind"] == "gguf-embed" and meta["remote"]["model"] == "tiny-qwen3"
    assert meta["remote"]["url"] == qwen_server.url and len(meta["remote"]["vector"]) == 256
    assert meta["model_fingerprint"] == qwen.fingerprint  # serve reports its file's


def test_search_through_the_server_finds_what_local_search_finds(
        built: tuple[Path, Path], qwen_path: Path, qwen_server: Live) -> None:
    local = CliRunner().invoke(cli, ["search", "extract a tar archive", "--db",
                                     str(built[0]), "-m", str(qwen_path), "--json"])
    remote = CliRunner().invoke(cli, ["search", "extract a tar archive", "--db",
                                      str(built[1]), "--embed-url", qwen_server.url, "--json"])
    assert local.exit_code == 0 and remote.exit_code == 0, remote.stderr
    got, want = json.loads(remote.stdout), json.loads(local.stdout)
    assert [r["path"] for r in got] == [r["path"] for r in want]
    np.testing.assert_allclose([r["score"] for r in got], [r["score"] for r in want],
                               atol=1e-3)


def test_a_remote_index_needs_the_url_to_be_searched(built: tuple[Path, Path],
                                                     qwen_server: Live) -> None:
    result = CliRunner().invoke(cli, ["search", "tar", "--db", str(built[1])])
    assert result.exit_code == 1 and result.stdout == ""
    assert result.stderr.count("\n") == 1 and "Traceback" not in result.stderr
    assert f"pass --embed-url {qwen_server.url}" in result.stderr


def test_a_local_index_takes_a_server_of_the_same_model_file(
        built: tuple[Path, Path], qwen_server: Live) -> None:
    with RemoteEngine(qwen_server.url) as engine, \
            Index(built[0], engine, readonly=True) as index:
        assert index.search("tar archive", k=3)


def test_a_server_with_another_model_is_refused(built: tuple[Path, Path], docs: Path,
                                                minilm_server: Live) -> None:
    before = built[1].read_bytes()
    for db in built:  # the remote index, and the local one
        result = CliRunner().invoke(cli, ["index", str(docs), "--db", str(db), "--embed-url",
                                          minilm_server.url, "--embed-api-key", KEY])
        assert result.exit_code == 1, result.stdout
        line = result.stderr.strip()
        assert line.startswith(f"Error: index {db}") and "\n" not in line
        assert "Traceback" not in result.stderr and KEY not in result.stderr
    assert "384 dims (the index has 256)" in line or "minilm" in line
    assert built[1].read_bytes() == before


def test_another_vector_for_the_fingerprint_text_is_refused(built: tuple[Path, Path]) -> None:
    with Index(built[1], readonly=True) as index:
        recorded = index.meta
    noisy = dict(recorded, remote=dict(recorded["remote"]))
    vec = np.asarray(recorded["remote"]["vector"])
    rng = np.random.default_rng(0)
    near = vec + rng.normal(0, 1, vec.shape) * 0.01 * np.abs(vec).mean()  # float noise
    noisy["remote"]["vector"] = near.tolist()
    assert identity_problem(recorded, noisy) is None
    far = vec + rng.normal(0, 1, vec.shape) * np.abs(vec).mean()
    noisy["remote"]["vector"] = far.tolist()
    problem = identity_problem(recorded, noisy)
    assert problem and "another vector for the fixed fingerprint text (cosine 0." in problem


def test_server_down_is_one_line_and_leaves_the_index(built: tuple[Path, Path], docs: Path,
                                                      tmp_path: Path,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(remote_module, "BACKOFF", 0.0)
    url = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    before = built[1].read_bytes()
    for db in (built[1], tmp_path / "new.db"):
        result = CliRunner().invoke(cli, ["index", str(docs), "--db", str(db),
                                          "--embed-url", url])
        assert result.exit_code == 1 and result.stdout == ""
        assert result.stderr.startswith(f"Error: the embedding server at {url} cannot be "
                                        f"reached (")
        assert result.stderr.endswith(", 5 tries): start it, or check --embed-url\n")
        assert result.stderr.count("\n") == 1
    assert built[1].read_bytes() == before and not (tmp_path / "new.db").exists()


def test_api_key_is_sent_as_bearer_and_never_printed(minilm_server: Live, minilm: Engine,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    ok = CliRunner().invoke(cli, ["embed", "list files", "--embed-url", minilm_server.url],
                            env={"GGUF_EMBED_EMBED_API_KEY": KEY})
    assert ok.exit_code == 0, ok.stderr
    np.testing.assert_allclose(json.loads(ok.stdout), minilm.embed(["list files"])[0],
                               atol=1e-5)
    bad = CliRunner().invoke(cli, ["-v", "embed", "x", "--embed-url", minilm_server.url,
                                   "--embed-api-key", KEY + "-wrong"])
    assert bad.exit_code == 1 and "refused the API key (HTTP 401)" in bad.stderr
    assert KEY not in bad.stderr and KEY not in bad.stdout


def test_the_index_follows_edits_through_the_server(tmp_path: Path, qwen_server: Live,
                                                    qwen: Engine) -> None:
    (tmp_path / "docs").mkdir()
    note = tmp_path / "docs" / "note.md"
    note.write_text("rotate the logs every night\n")
    with RemoteEngine(qwen_server.url) as engine, Index(tmp_path / "w.db", engine) as index:
        index.add([tmp_path / "docs"])
        note.write_text("back up the database every week\n")
        summary = index.update([note], [tmp_path / "docs"])
        assert summary.updated == 1
        hit = index.search("database backup", k=1, mode="vector")[0]
    assert hit.snippet.startswith("back up the database")


# ---------------------------------------------------------------- stubs (httpx.MockTransport)
class Stub:
    """An OpenAI-style server that is not gguf-embed: hashed vectors, scripted failures."""

    def __init__(self, *, fail: list[int] | None = None, model: str = "stub-model",
                 dims: int = 8) -> None:
        self.fail = list(fail or [])  # statuses answered first, one per embeddings request
        self.model, self.dims = model, dims
        self.requests: list[httpx.Request] = []
        self.bodies: list[dict[str, Any]] = []
        self.lock = threading.Lock()
        self.in_flight = self.most_in_flight = 0

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        path = request.url.path
        if path == "/v1/models":
            return httpx.Response(200, json={"data": [{"id": self.model}]})
        if path != "/v1/embeddings":
            return httpx.Response(404, json={"error": {"message": "not found"}})
        if self.fail:
            return httpx.Response(self.fail.pop(0), json={"error": {"message": "busy"}})
        body = json.loads(request.content)
        self.bodies.append(body)
        with self.lock:
            self.in_flight += 1
            self.most_in_flight = max(self.most_in_flight, self.in_flight)
        try:
            data = [{"index": i, "embedding": self.vector(t).tolist()}
                    for i, t in enumerate(body["input"])]
        finally:
            with self.lock:
                self.in_flight -= 1
        return httpx.Response(200, json={"data": data, "model": self.model,
                                         "usage": {"prompt_tokens": 5 * len(data)}})

    def vector(self, text: str) -> np.ndarray:
        seed = int.from_bytes(text.encode()[:8].ljust(8, b"\0"), "little")
        return np.random.default_rng(seed).normal(size=self.dims)


def stub_engine(stub: Callable[[httpx.Request], httpx.Response], **kwargs: Any) -> RemoteEngine:
    sleeps: list[float] = kwargs.pop("sleeps", [])
    return RemoteEngine("http://gpu-box:8000/v1/", transport=httpx.MockTransport(stub),
                        sleep=sleeps.append, **kwargs)


def test_retries_503_and_429_with_backoff_then_succeeds() -> None:
    stub, sleeps = Stub(fail=[503, 429, 503]), []
    engine = stub_engine(stub, sleeps=sleeps)  # the probe's embedding is retried 3 times
    assert engine.kind == "openai" and engine.dims == 8 and engine.server_model == "stub-model"
    assert sleeps == [0.5, 1.0, 2.0]
    vectors = engine.embed(["a", "b"])
    assert vectors.shape == (2, 8)
    np.testing.assert_allclose(vectors[1], stub.vector("b") / np.linalg.norm(stub.vector("b")),
                               rtol=1e-5)
    assert {r.url.host for r in stub.requests} == {"gpu-box"}  # nowhere else


def test_gives_up_after_five_tries_naming_the_url() -> None:
    stub, sleeps = Stub(fail=[502] * 10), []
    with pytest.raises(EngineUnavailable) as caught:
        stub_engine(stub, sleeps=sleeps)
    assert str(caught.value) == ("the embedding server at http://gpu-box:8000 cannot be "
                                 "reached (HTTP 502, 5 tries): start it, or check --embed-url")
    assert len(sleeps) == 4 and caught.value.url == "http://gpu-box:8000"


def test_a_client_error_is_not_retried() -> None:
    stub = Stub(fail=[400])
    with pytest.raises(InputError, match="refused the input: busy"):
        stub_engine(stub)
    assert len([r for r in stub.requests if r.url.path == "/v1/embeddings"]) == 1


def test_bearer_key_header() -> None:
    seen: list[str | None] = []

    def server(request: httpx.Request) -> httpx.Response:
        seen.append(request.headers.get("authorization"))
        return Stub()(request)

    stub_engine(server, api_key=KEY)
    assert set(seen) == {f"Bearer {KEY}"}


def test_batches_and_concurrency_keep_order() -> None:
    stub = Stub()
    engine = stub_engine(stub, batch_size=4, concurrency=3)
    texts = [f"text number {i}" for i in range(23)]
    result = engine.encode(texts)
    sizes = [len(b["input"]) for b in stub.bodies[1:]]  # after the probe's
    assert sorted(sizes) == [3, 4, 4, 4, 4, 4] and stub.most_in_flight <= 3
    want = np.stack([stub.vector(t) for t in texts])
    want /= np.linalg.norm(want, axis=1, keepdims=True)
    np.testing.assert_allclose(result.vectors, want, rtol=1e-5)
    assert result.total_tokens == 5 * 23


def test_prompts_are_applied_here_for_other_servers() -> None:
    stub = Stub(model="Qwen/Qwen3-Embedding-0.6B")
    engine = stub_engine(stub)
    assert engine.spec.query_prompt == QWEN3_QUERY and engine.max_tokens == 32768
    engine.embed(["how to untar"], query=True)
    engine.embed(["a document"])
    assert stub.bodies[-2]["input"] == [f"Instruct: {QWEN3_TASK}\nQuery:how to untar"]
    assert stub.bodies[-1]["input"] == ["a document"]
    assert "input_type" not in stub.bodies[-1] and stub.bodies[-1]["model"] == engine.model
    custom = stub_engine(Stub(), query_prefix="query: ", document_prefix="passage: ")
    assert custom.prepare(["q"], query=True).texts == ["query: q"]
    assert custom.prepare(["d"]).texts == ["passage: d"]


def test_catalog_names_as_servers_spell_them() -> None:
    assert catalog_spec("qwen3-embedding:0.6b").name == "qwen3-embedding-0.6b"  # type: ignore
    assert catalog_spec("BAAI/bge-small-en-v1.5").name == "bge-small-en-v1.5"  # type: ignore
    assert catalog_spec("bge-reranker-base") is None and catalog_spec("my-model") is None


def test_estimated_counts_and_truncation_for_servers_that_cannot_count() -> None:
    engine = stub_engine(Stub(), context=64)
    text = "word " * 200
    assert engine.count_tokens([text]) == [334 + 2]  # ceil(1000 bytes / 3) + 2
    result = engine.encode([text, "short"], truncate=True)
    assert result.truncated == [0]
    with pytest.raises(EngineError, match="cannot tokenize"):
        engine.tokenize("x")


@pytest.mark.parametrize("answer", [
    {"data": []},
    {"data": [{"index": 0, "embedding": [float("nan")] * 8}]},
    {"data": [{"index": 0, "embedding": [1.0] * 3}]},
])
def test_bad_answers_are_errors(answer: dict[str, Any]) -> None:
    state = {"probe": True}

    def server(request: httpx.Request) -> httpx.Response:
        if request.url.path == "/v1/embeddings" and not state.pop("probe", False):
            return httpx.Response(200, content=json.dumps(answer))
        return Stub()(request)

    engine = stub_engine(server)
    with pytest.raises(EngineError, match="the server at http://gpu-box:8000 answered"):
        engine.embed(["x"])


@pytest.mark.parametrize("url", ["ftp://host", "http://user:pw@host:1", "http://h/?key=1",
                                 "not a url"])
def test_urls_refused(url: str) -> None:
    with pytest.raises(InputError):
        clean_url(url)
    assert clean_url("https://h:1/proxy/v1/embeddings") == "https://h:1/proxy"


def test_remote_options_need_the_url() -> None:
    result = CliRunner().invoke(cli, ["embed", "x", "--embed-model", "m"])
    assert result.exit_code == 2 and "--embed-model needs --embed-url" in result.stderr


def test_identity_local_vs_remote_messages() -> None:
    local = {"model_fingerprint": "abc", "dims": 8, "model_file": "m.gguf"}
    remote = {"model_fingerprint": "remote:x", "dims": 8, "model_dims": 8,
              "remote": {"kind": "openai", "url": "http://h", "model": "m", "vector": [1.0]}}
    assert "was built with the local model m.gguf" in str(identity_problem(local, remote))
    assert "pass --embed-url http://h" in str(identity_problem(remote, local))


def test_a_remote_index_of_a_served_file_searches_with_that_file(
        built: tuple[Path, Path], qwen_path: Path) -> None:
    result = CliRunner().invoke(cli, ["search", "tar archive", "--db", str(built[1]), "-m",
                                      str(qwen_path), "--json", "-k", "2"])
    assert result.exit_code == 0, result.stderr
    assert len(json.loads(result.stdout)) == 2


def test_serve_tokenize(qwen_server: Live, qwen: Engine) -> None:
    one = httpx.post(qwen_server.url + "/tokenize", json={"content": "list files"}).json()
    many = httpx.post(qwen_server.url + "/tokenize", json={"content": ["a", "list files"]})
    assert one["tokens"] == qwen.tokenize("list files").tolist()
    assert many.json()["tokens"][1] == one["tokens"]
    bad = httpx.post(qwen_server.url + "/tokenize", json={"content": [1, 2]})
    assert bad.status_code == 400 and bad.json()["error"]["param"] == "content"
    health = httpx.get(qwen_server.url + "/health").json()
    assert health["server"] == "gguf-embed" and health["fingerprint"] == qwen.fingerprint


@pytest.mark.parametrize("command", [["watch", "DOCS"], ["mcp", "--watch", "DOCS"],
                                     ["search", "tar"], ["embed", "tar"]])
def test_every_command_takes_the_url(command: list[str], docs: Path, tmp_path: Path,
                                     monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(remote_module, "BACKOFF", 0.0)
    url = f"http://127.0.0.1:{free_port()}"  # down: the command stops before anything else
    db = tmp_path / "i.db"
    if command[0] == "search":
        Index(db, readonly=False).close()  # an index to search
    args = [str(docs) if a == "DOCS" else a for a in command]
    result = CliRunner().invoke(cli, [*args, "--db", str(db), "--embed-url", url]
                                if command[0] != "embed" else [*args, "--embed-url", url])
    assert result.exit_code == 1, result.output
    assert result.stderr.startswith(f"Error: the embedding server at {url} cannot be reached")
    assert result.stderr.count("\n") == 1


def test_embed_url_with_a_local_model_is_a_usage_error(qwen_path: Path) -> None:
    result = CliRunner().invoke(cli, ["embed", "x", "-m", str(qwen_path), "--embed-url",
                                      "http://127.0.0.1:9"])
    assert result.exit_code == 2 and "--model is for a local model" in result.stderr


def test_an_answer_that_is_not_an_object_is_an_error() -> None:
    state = {"probe": True}

    def server(request: httpx.Request) -> httpx.Response:
        if request.url.path == "/v1/embeddings" and not state.pop("probe", False):
            return httpx.Response(200, json=[1, 2, 3])
        return Stub()(request)

    with pytest.raises(EngineError, match="answered 1 inputs with no embeddings"):
        stub_engine(server).embed(["x"])


def test_an_http_server_is_reached_without_loading_certificates(
        minilm_server: Live, minilm: Engine, monkeypatch: pytest.MonkeyPatch) -> None:
    """No TLS on http:// (redirects are not followed): the CA bundle is not loaded for it
    (20-50 ms of a one-shot search)."""
    import ssl

    loads: list[object] = []
    real = ssl.SSLContext.load_verify_locations

    def spy(self: ssl.SSLContext, *args: Any, **kwargs: Any) -> None:
        loads.append(args or kwargs)
        real(self, *args, **kwargs)

    monkeypatch.setattr(ssl.SSLContext, "load_verify_locations", spy)
    with RemoteEngine(minilm_server.url, api_key=KEY) as engine:
        vector = engine.embed(["list files"])[0]
    np.testing.assert_allclose(vector, minilm.embed(["list files"])[0], atol=1e-5)
    assert loads == []


def test_an_https_server_whose_certificate_no_trusted_ca_signed_is_refused(
        tmp_path: Path) -> None:
    """From the attacker's side: a server in the middle, with a certificate of its own CA,
    is refused (https:// stays verified), and nothing is sent to it."""
    import http.server
    import ssl

    import trustme

    heard: list[str] = []

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            heard.append(self.path)
            self.send_response(200)
            self.end_headers()

        do_POST = do_GET

        def log_message(self, *args: Any) -> None:
            pass

    ca = trustme.CA()
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("127.0.0.1").configure_cert(context)
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.socket = context.wrap_socket(server.socket, server_side=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        with pytest.raises(EngineUnavailable, match="certificate"):
            RemoteEngine(f"https://127.0.0.1:{server.server_address[1]}", api_key=KEY,
                         retries=1)
    finally:
        server.shutdown()
        server.server_close()
    assert heard == []
