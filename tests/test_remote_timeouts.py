"""A remote server that takes the connection and never answers: the start-up probes wait a
short ``probe_timeout`` and stop with one line naming the URL (no retries: they were 5 tries of
300 s, 25 minutes of silence); an embedding request waits ``timeout`` (``--embed-timeout``) and
is not retried either.  A server that refuses connections (one that is starting) is still
retried.  Servers are real sockets on 127.0.0.1; the timeouts are given small, and no test
measures time."""

from __future__ import annotations

import json
import socket
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest
from click.testing import CliRunner

from gguf_embed import EngineUnavailable, RemoteEngine
from gguf_embed.cli import cli
from tests.support.local_servers import LocalHTTPServer, QuietHandler, engine_error, raw_server

PROBE_ADVICE = ("check that --embed-url points at an embeddings server (not another service "
                "on that port) and that it is up (not still starting, stopped or stuck)")
EMBED_ADVICE = ("if it is busy or slow (a big batch on a CPU), give a longer --embed-timeout "
                "or a smaller --embed-batch; else check that it is not stuck")


@contextmanager
def silent_server() -> Iterator[tuple[str, list[bytes]]]:
    """A server that accepts each connection, reads what is sent, and never answers (a
    stopped or stuck server); yields its URL and what each connection sent."""
    release, heard = threading.Event(), []

    def hold(conn: socket.socket) -> None:
        heard.append(conn.recv(65536))
        release.wait(60)  # the connection stays open, unanswered, until the test ends

    try:
        with raw_server(hold) as port:
            yield f"http://127.0.0.1:{port}", heard
    finally:
        release.set()


def test_a_server_that_never_answers_is_one_line_after_the_probe_timeout() -> None:
    with silent_server() as (url, heard):
        error, sleeps = engine_error(url, probe_timeout=0.2)
    assert isinstance(error, EngineUnavailable) and error.url == url
    assert str(error) == (f"the embedding server at {url} accepted the connection but did "
                          f"not answer GET /health within 0.2 s: {PROBE_ADVICE}")
    assert sleeps == [] and len(heard) == 1 and heard[0].startswith(b"GET /health ")


def test_an_https_server_that_never_answers_the_handshake_is_one_line() -> None:
    """For https://, the silence comes in the TLS handshake (a connect timeout to httpx): a
    port that takes connections is told from one that cannot be reached, and not retried."""
    with silent_server() as (url, heard):
        url = url.replace("http://", "https://")
        error, sleeps = engine_error(url, probe_timeout=0.2)
    assert isinstance(error, EngineUnavailable)
    assert str(error) == (f"the embedding server at {url} accepted the connection but did "
                          f"not answer the TLS handshake within 0.2 s: {PROBE_ADVICE}")
    assert sleeps == [] and heard[0].startswith(b"\x16")  # a TLS ClientHello


@pytest.mark.parametrize("how", ["flag", "env"])
def test_cli_a_server_that_never_answers_is_one_line(how: str) -> None:
    """--embed-timeout (or GGUF_EMBED_EMBED_TIMEOUT) reaches the engine; the probes never
    wait longer than it."""
    with silent_server() as (url, heard):
        args = ["embed", "x", "--embed-url", url]
        env = {"GGUF_EMBED_EMBED_TIMEOUT": "0.3"} if how == "env" else {}
        result = CliRunner().invoke(cli, args + (["--embed-timeout", "0.3"] if how == "flag"
                                                 else []), env=env)
    assert result.exit_code == 1 and result.stdout == "", result.exception
    assert result.stderr == (f"Error: the embedding server at {url} accepted the connection "
                             f"but did not answer GET /health within 0.3 s: {PROBE_ADVICE}\n")
    assert len(heard) == 1


def test_embed_timeout_needs_the_url_and_a_positive_number() -> None:
    alone = CliRunner().invoke(cli, ["embed", "x", "--embed-timeout", "5"])
    assert alone.exit_code == 2 and "--embed-timeout needs --embed-url" in alone.stderr
    zero = CliRunner().invoke(cli, ["embed", "x", "--embed-url", "http://127.0.0.1:9",
                                    "--embed-timeout", "0"])
    assert zero.exit_code == 2 and "--embed-timeout" in zero.stderr


class Stalling(LocalHTTPServer):
    """An embeddings server on 127.0.0.1 that answers its model list and the first
    ``answered`` embedding requests, then takes embedding requests and never answers them."""

    def __init__(self, answered: int) -> None:
        self.embeddings, self.release = 0, threading.Event()
        outer = self

        class Handler(QuietHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                if self.path == "/v1/embeddings":
                    outer.embeddings += 1
                    if outer.embeddings > answered:
                        outer.release.wait(60)
                        return
                    size = len(json.loads(body)["input"])
                    answer: Any = {"data": [{"index": i, "embedding": [1.0, float(i)]}
                                            for i in range(size)]}
                elif self.path == "/v1/models":
                    answer = {"data": [{"id": "m"}]}
                else:
                    self.send_empty(404)
                    return
                self.send_json(answer)

            do_GET = do_POST

        super().__init__(Handler)

    def __exit__(self, *exc: object) -> None:
        self.release.set()
        super().__exit__(*exc)


def test_an_embedding_request_not_answered_in_time_is_one_line_and_not_retried() -> None:
    """The probes answer; the engine is made (the fingerprint text is embedded); then a batch
    is never answered: one error after ``timeout``, the batch sent once."""
    with Stalling(answered=1) as server:
        sleeps: list[float] = []
        with RemoteEngine(server.url, timeout=0.3, sleep=sleeps.append) as engine:
            assert engine.dims == 2
            with pytest.raises(EngineUnavailable) as caught:
                engine.embed(["a", "b"])
    assert str(caught.value) == (f"the embedding server at {server.url} accepted the "
                                 f"connection but did not answer POST /v1/embeddings within "
                                 f"0.3 s: {EMBED_ADVICE}")
    assert sleeps == [] and server.embeddings == 2


def test_the_embedding_timeout_is_not_the_probe_timeout() -> None:
    """An embedding request waits ``timeout``, not the short probe timeout: the fingerprint
    request at start-up, never answered, fails naming ``timeout``'s seconds."""
    with Stalling(answered=0) as server:
        error, sleeps = engine_error(server.url, timeout=0.4, probe_timeout=0.1)
    assert str(error) == (f"the embedding server at {server.url} accepted the connection but "
                          f"did not answer POST /v1/embeddings within 0.4 s: {EMBED_ADVICE}")
    assert sleeps == [] and server.embeddings == 1


def test_a_server_that_refuses_connections_is_still_retried() -> None:
    """A refused connection is a server that may be starting: retried with backoff."""
    with socket.create_server(("127.0.0.1", 0)) as sock:
        port = sock.getsockname()[1]
    url = f"http://127.0.0.1:{port}"
    error, sleeps = engine_error(url, retries=3)
    assert sleeps == [0.5, 1.0]
    assert str(error).startswith(f"the embedding server at {url} cannot be reached (")
    assert str(error).endswith("Connection refused, 3 tries): start it, or check --embed-url")
