"""Little servers on 127.0.0.1 for the remote-engine tests: raw TCP sockets, http.server
stubs (plain or https with a trustme certificate), the private CA fixtures, and a helper that
returns the error making a RemoteEngine raises."""

from __future__ import annotations

import http.server
import json
import socket
import ssl
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import Any, TypeVar

import pytest
import trustme

from gguf_embed import EngineUnavailable, RemoteEngine
from gguf_embed.errors import EngineError, InputError

_S = TypeVar("_S", bound="LocalHTTPServer")
KEY = "sk-test-0123456789-secret"
DIMS = 4


@pytest.fixture(scope="module")
def ca() -> trustme.CA:
    return trustme.CA()


@pytest.fixture()
def ca_file(ca: trustme.CA, tmp_path: Path) -> Path:
    path = tmp_path / "private-ca.pem"
    ca.cert_pem.write_to_path(str(path))
    return path


def server_context(cert: trustme.LeafCert) -> ssl.SSLContext:
    """A server-side TLS context presenting ``cert``."""
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    cert.configure_cert(context)
    return context


def tls_context(ca: trustme.CA) -> ssl.SSLContext:
    """A server-side TLS context with a certificate ``ca`` issued for 127.0.0.1."""
    return server_context(ca.issue_cert("127.0.0.1"))


@contextmanager
def raw_server(handle: Callable[[socket.socket], None]) -> Iterator[int]:
    """A TCP server on a free 127.0.0.1 port that gives each connection to ``handle``."""
    listener = socket.create_server(("127.0.0.1", 0))

    def loop() -> None:
        while True:
            try:
                conn, _ = listener.accept()
            except OSError:
                return
            threading.Thread(target=serve_one, args=(conn,), daemon=True).start()

    def serve_one(conn: socket.socket) -> None:
        with conn, suppress(OSError):
            handle(conn)

    thread = threading.Thread(target=loop, daemon=True)
    thread.start()
    try:
        yield int(listener.getsockname()[1])
    finally:
        listener.shutdown(socket.SHUT_RDWR)  # wakes accept()
        listener.close()
        thread.join(5)


def engine_error(url: str, **kwargs: Any) -> tuple[Exception, list[float]]:
    """The error making an engine for ``url`` raises, and the backoff sleeps before it."""
    sleeps: list[float] = []
    with pytest.raises((EngineUnavailable, EngineError, InputError)) as caught:
        RemoteEngine(url, sleep=sleeps.append, **kwargs)
    return caught.value, sleeps


class QuietHandler(http.server.BaseHTTPRequestHandler):
    """A request handler that logs nothing and can answer JSON in one call."""

    def send_json(self, answer: Any, status: int = 200,
                  headers: dict[str, str] | None = None) -> None:
        data = json.dumps(answer).encode()
        self.send_response(status)
        for name, value in {**(headers or {}), "Content-Type": "application/json",
                            "Content-Length": str(len(data))}.items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(data)

    def send_empty(self, status: int, headers: dict[str, str] | None = None) -> None:
        self.send_response(status)
        for name, value in {**(headers or {}), "Content-Length": "0"}.items():
            self.send_header(name, value)
        self.end_headers()

    def log_message(self, *args: Any) -> None:
        pass


class LocalHTTPServer:
    """An http.server on a free 127.0.0.1 port (https with ``cert``) running ``handler`` in a
    thread while the ``with`` block lasts; ``url`` is its root."""

    def __init__(self, handler: type[http.server.BaseHTTPRequestHandler],
                 cert: trustme.LeafCert | None = None) -> None:
        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self.scheme = "http"
        if cert is not None:
            self.server.socket = server_context(cert).wrap_socket(self.server.socket,
                                                                  server_side=True)
            self.scheme = "https"
        self.url = f"{self.scheme}://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self: _S) -> _S:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()


class Server(LocalHTTPServer):
    """An OpenAI-style embeddings server on a free 127.0.0.1 port (https with ``cert``), or
    one that answers every request with a redirect to ``redirect`` + the path; it records
    each request as (method, path, Authorization header)."""

    def __init__(self, *, cert: trustme.LeafCert | None = None, redirect: str | None = None,
                 status: int = 301) -> None:
        self.heard: list[tuple[str, str, str | None]] = []
        outer = self

        class Handler(QuietHandler):
            def do_GET(self) -> None:
                outer.heard.append((self.command, self.path,
                                    self.headers.get("Authorization")))
                length = int(self.headers.get("Content-Length") or 0)
                body = json.loads(self.rfile.read(length)) if length else {}
                if redirect is not None:
                    self.send_empty(status, {"Location": redirect + self.path})
                    return
                if self.path == "/v1/models":
                    answer: Any = {"data": [{"id": "stub"}]}
                elif self.path == "/v1/embeddings":
                    answer = {"data": [{"index": i, "embedding": [1.0, 0.0, 0.0, float(i)]}
                                       for i in range(len(body["input"]))], "model": "stub"}
                else:
                    self.send_empty(404)
                    return
                self.send_json(answer)

            do_POST = do_GET

        super().__init__(Handler, cert)
