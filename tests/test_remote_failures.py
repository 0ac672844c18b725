"""The remote engine's failures, as a user meets them: what will never work (a TLS mismatch
either way, a host name that is not known, a bad URL, a key missing or refused, a URL that is
not an embeddings API) stops at once with one line saying what to do; what a starting server
does (closing connections, a name lookup that may work later) is still retried.  Servers are
little threads on 127.0.0.1: http.server stubs (tests.support.local_servers) and raw sockets;
certificates from trustme."""

from __future__ import annotations

import email.utils
import json
import socket
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest
import trustme
from click.testing import CliRunner

from gguf_embed import EngineUnavailable, RemoteEngine
from gguf_embed.cli import cli
from gguf_embed.errors import EngineError, InputError
from tests.support import local_servers
from tests.support.local_servers import (
    DIMS,
    KEY,
    LocalHTTPServer,
    QuietHandler,
    Server,
    engine_error,
    raw_server,
    tls_context,
)

ca, ca_file = local_servers.ca, local_servers.ca_file  # the private CA fixtures, shared

API_HINT = ("check that --embed-url is the root of an OpenAI-compatible embeddings API (the URL "
            "before /v1/embeddings) and that --embed-model names a model it serves")


# ---------------------------------------------------------------- TLS either way
def test_an_https_url_on_a_plain_http_port_fails_at_once() -> None:
    with Server() as plain:
        url = plain.url.replace("http://", "https://")
        error, sleeps = engine_error(url, api_key=KEY)
    assert sleeps == [] and plain.heard == []
    message = str(error)
    assert message.startswith(f"the embedding server at {url} failed the TLS handshake (")
    assert message.endswith(f"): if it serves plain HTTP on that port, give --embed-url "
                            f"{plain.url}; else check its TLS set-up")
    assert "_ssl.c" not in message and KEY not in message


def test_cli_https_url_on_a_plain_http_port_is_one_line() -> None:
    with Server() as plain:
        url = plain.url.replace("http://", "https://")
        result = CliRunner().invoke(cli, ["embed", "x", "--embed-url", url],
                                    env={"GGUF_EMBED_EMBED_API_KEY": KEY})
    assert result.exit_code == 1 and result.stdout == "" and KEY not in result.stderr
    assert result.stderr.startswith(f"Error: the embedding server at {url} failed the TLS "
                                    f"handshake (")
    assert result.stderr.count("\n") == 1 and "Traceback" not in result.stderr


def test_an_http_url_on_an_https_port_says_to_use_https(ca: trustme.CA) -> None:
    """A Python (uvicorn-like) TLS server resets a plain-HTTP request: the engine finds that
    the port speaks TLS and says so at once, having sent it nothing readable."""
    with Server(cert=ca.issue_cert("127.0.0.1")) as tls:
        url = tls.url.replace("https://", "http://")
        error, sleeps = engine_error(url, api_key=KEY)
    assert str(error) == (f"the embedding server at {url} speaks HTTPS on that port: give "
                          f"--embed-url {tls.url}")
    assert sleeps == [] and tls.heard == []


@pytest.mark.parametrize("model", [None, "m"])
def test_an_http_url_on_a_port_that_answers_plain_http_with_400(ca: trustme.CA,
                                                                 model: str | None) -> None:
    """nginx and Go answer a plain-HTTP request on their TLS port with a 400 page: that is
    not a refused input nor a server without a model list, but the wrong scheme."""
    context = tls_context(ca)

    def handle(conn: socket.socket) -> None:
        if conn.recv(1, socket.MSG_PEEK) == b"\x16":  # a TLS ClientHello
            context.wrap_socket(conn, server_side=True).close()
            return
        conn.recv(65536)
        page = b"<html><body>400 The plain HTTP request was sent to HTTPS port</body></html>"
        conn.sendall(b"HTTP/1.1 400 Bad Request\r\nContent-Type: text/html\r\n"
                     b"Content-Length: %d\r\nConnection: close\r\n\r\n%s" % (len(page), page))

    with raw_server(handle) as port:
        error, sleeps = engine_error(f"http://127.0.0.1:{port}", model=model)
    assert isinstance(error, EngineUnavailable) and sleeps == []
    assert str(error) == (f"the embedding server at http://127.0.0.1:{port} speaks HTTPS on "
                          f"that port: give --embed-url https://127.0.0.1:{port}")


def test_a_plain_server_answering_400_is_still_a_refused_input() -> None:
    """The check for HTTPS does not turn a plain server's 400 into anything else."""
    def handle(conn: socket.socket) -> None:
        conn.recv(65536)
        conn.sendall(b"HTTP/1.1 400 Bad Request\r\nContent-Length: 8\r\n"
                     b"Connection: close\r\n\r\nno input")

    with raw_server(handle) as port:
        error, sleeps = engine_error(f"http://127.0.0.1:{port}", model="m")
    assert isinstance(error, InputError) and sleeps == []
    assert str(error) == (f"the embedding server at http://127.0.0.1:{port} refused the "
                          f"input: no input")


def test_a_tls_handshake_the_server_closes_is_retried_then_named() -> None:
    """A server that accepts and closes (Docker's port proxy while the container starts) may
    answer soon: retried, and the last line says what happened."""
    with raw_server(lambda conn: None) as port:
        url = f"https://127.0.0.1:{port}"
        error, sleeps = engine_error(url, retries=3)
    assert sleeps == [0.5, 1.0]
    assert str(error) == (f"the embedding server at {url} cannot be reached (the server "
                          f"closed the connection during the TLS handshake, 3 tries): start "
                          f"it, or check --embed-url")


def test_a_tls_server_that_starts_after_closing_connections_is_used(
        ca: trustme.CA, ca_file: Path) -> None:
    context = tls_context(ca)
    with Server() as server:
        listener, closes = server.server.socket, [1, 1]

        def get_request() -> tuple[socket.socket, Any]:
            conn, addr = listener.accept()
            if closes:
                closes.pop()
                conn.close()
                raise OSError("starting")  # http.server drops this connection
            return context.wrap_socket(conn, server_side=True), addr

        server.server.get_request = get_request  # type: ignore[method-assign]
        url = server.url.replace("http://", "https://")
        sleeps: list[float] = []
        with RemoteEngine(url, ca_cert=ca_file, sleep=sleeps.append) as engine:
            assert engine.embed(["a"]).shape == (1, DIMS)
    assert sleeps == [0.5, 1.0] and closes == []


# ---------------------------------------------------------------- host names
def fake_lookup(monkeypatch: pytest.MonkeyPatch, code: int, why: str) -> None:
    real = socket.getaddrinfo

    def lookup(host: Any, *args: Any, **kwargs: Any) -> Any:
        if host == "embed-box.example":
            raise socket.gaierror(code, why)
        return real(host, *args, **kwargs)

    monkeypatch.setattr(socket, "getaddrinfo", lookup)


def test_a_host_name_that_is_not_known_fails_at_once(monkeypatch: pytest.MonkeyPatch) -> None:
    fake_lookup(monkeypatch, socket.EAI_NONAME, "Name or service not known")
    error, sleeps = engine_error("http://embed-box.example:8000")
    assert sleeps == []
    assert str(error) == ("the embedding server at http://embed-box.example:8000 cannot be "
                          "found: the host name embed-box.example is not known (Name or "
                          "service not known): check the name in --embed-url")


def test_a_name_lookup_that_may_work_later_is_retried(monkeypatch: pytest.MonkeyPatch) -> None:
    fake_lookup(monkeypatch, socket.EAI_AGAIN, "Temporary failure in name resolution")
    error, sleeps = engine_error("http://embed-box.example:8000", retries=3)
    assert sleeps == [0.5, 1.0]
    assert str(error) == ("the embedding server at http://embed-box.example:8000 cannot be "
                          "reached ([Errno -3] Temporary failure in name resolution, 3 "
                          "tries): start it, or check --embed-url")


# ---------------------------------------------------------------- URLs
@pytest.mark.parametrize(("url", "why"), [
    ("http://127.0.0.1:abc", "Port could not be cast to integer value as 'abc'"),
    ("http://127.0.0.1:99999", "Port out of range 0-65535"),
    ("http://127.0.0.1:0", "port 0"),
    ("http://[::1", "Invalid IPv6 URL"),
    ("http://embed box:8000", "a space or control character"),
    ("http://embed\x00box:8000", "a space or control character"),
])
def test_a_url_that_cannot_work_is_one_line(url: str, why: str) -> None:
    result = CliRunner().invoke(cli, ["embed", "x", "--embed-url", url])
    assert result.exit_code == 1 and result.stdout == "", result.exception
    assert result.stderr == f"Error: --embed-url {url!r} is not a valid URL ({why})\n"


def test_a_bad_url_never_echoes_a_key_in_it() -> None:
    with pytest.raises(InputError) as caught:
        RemoteEngine(f"http://me:{KEY}@127.0.0.1:abc")
    assert KEY not in str(caught.value) and "'http://…@127.0.0.1:abc'" in str(caught.value)


# ---------------------------------------------------------------- answers that are not the API
class Answering(LocalHTTPServer):
    """An HTTP server on 127.0.0.1 that answers every request with ``status`` and ``body``."""

    def __init__(self, status: int, body: bytes = b"", kind: str = "text/html") -> None:
        self.heard: list[str] = []
        outer = self

        class Handler(QuietHandler):
            def do_GET(self) -> None:
                outer.heard.append(self.path)
                self.rfile.read(int(self.headers.get("Content-Length") or 0))
                self.send_response(status)
                self.send_header("Content-Type", kind)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            do_POST = do_GET

        super().__init__(Handler)


@pytest.mark.parametrize(("key", "status", "said"), [
    (None, 401, "needs an API key (HTTP 401): pass it"),
    (KEY, 403, "refused the API key (HTTP 403): pass the right one"),
])
def test_a_key_missing_or_refused_names_the_option_and_the_variable(
        key: str | None, status: int, said: str) -> None:
    with Answering(status, b'{"error": {"message": "no"}}', "application/json") as server:
        error, sleeps = engine_error(server.url, api_key=key)
    assert sleeps == [] and KEY not in str(error)
    assert str(error) == (f"the embedding server at {server.url} {said} with "
                          f"--embed-api-key or GGUF_EMBED_EMBED_API_KEY")


def test_a_server_without_the_api_says_to_check_the_url() -> None:
    with Answering(404, b"Not Found", "text/plain") as server:
        listless, sleeps = engine_error(server.url)
        named, more = engine_error(server.url, model="m")
    assert sleeps == more == []
    assert str(listless) == (f"the server at {server.url} does not list its models (GET "
                             f"/v1/models: HTTP 404): if it is an embeddings API, name the "
                             f"model with --embed-model; else check --embed-url")
    assert str(named) == (f"the embedding server at {server.url} answered /v1/embeddings "
                          f"with HTTP 404: Not Found; {API_HINT}")


def test_a_web_page_is_not_taken_for_the_api() -> None:
    with Answering(200, b"<!doctype html><title>Dashboard</title>") as server:
        listless, sleeps = engine_error(server.url)
        named, more = engine_error(server.url, model="m")
    assert sleeps == more == []
    assert "(GET /v1/models: an answer that is not JSON)" in str(listless)
    assert isinstance(named, EngineError)
    assert str(named) == (f"the server at {server.url} answered /v1/embeddings with "
                          f"something that is not JSON: {API_HINT}")


# ---------------------------------------------------------------- still retried: Retry-After
class Busy(LocalHTTPServer):
    """An embeddings server on 127.0.0.1 that answers its first embedding requests with the
    scripted (status, Retry-After) pairs, then embeds."""

    def __init__(self, script: list[tuple[int, str]]) -> None:
        self.script = list(script)
        outer = self

        class Handler(QuietHandler):
            def do_POST(self) -> None:
                size = len(json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                           ["input"]) if self.path == "/v1/embeddings" else 0
                headers: dict[str, str]
                body: Any
                if self.path == "/v1/models":
                    status, headers, body = 200, {}, {"data": [{"id": "m"}]}
                elif self.path != "/v1/embeddings":
                    status, headers, body = 404, {}, {"error": {"message": "no"}}
                elif outer.script:
                    status, after = outer.script.pop(0)
                    headers, body = {"Retry-After": after}, {"error": {"message": "busy"}}
                else:
                    status, headers = 200, {}
                    body = {"data": [{"index": i, "embedding": [1.0, float(i)]}
                                     for i in range(size)]}
                self.send_json(body, status, headers)

            do_GET = do_POST

        super().__init__(Handler)


def test_retry_after_in_seconds_or_as_a_date_is_honoured_and_capped() -> None:
    soon = email.utils.format_datetime(datetime.now(timezone.utc) + timedelta(seconds=20),
                                       usegmt=True)
    past = "Wed, 21 Oct 2015 07:28:00 GMT"
    with Busy([(503, "3"), (429, soon), (503, "3600"), (429, past), (503, "soon")]) as server:
        sleeps: list[float] = []
        with RemoteEngine(server.url, sleep=sleeps.append, retries=6) as engine:
            assert engine.dims == 2 and server.script == []
    # 3 s; the date, 20 s away; 3600 capped at 30; a past date: 0; no number: the backoff
    assert sleeps[0] == 3.0 and 15.0 < sleeps[1] <= 20.0 and sleeps[2:] == [30.0, 0.0, 8.0]
