"""The remote engine's TLS and redirects, mostly from the attacker's side: certificates that
fail verification (not retried, and saying why), a private CA given with --embed-ca-cert
(trusted for that server only), and redirects (never followed: the API key goes nowhere else).
Servers are little http.server stubs on 127.0.0.1, certificates from trustme."""

from __future__ import annotations

import http.server
import json
import ssl
import threading
from pathlib import Path
from typing import Any

import pytest
import trustme
from click.testing import CliRunner

from gguf_embed import RemoteEngine
from gguf_embed._remote_tls import ssl_context
from gguf_embed.cli import cli
from gguf_embed.errors import InputError

KEY = "sk-test-0123456789-secret"
DIMS = 4


class Server:
    """An OpenAI-style embeddings server on a free 127.0.0.1 port (https with ``cert``), or
    one that answers every request with a redirect to ``redirect`` + the path; it records
    each request as (method, path, Authorization header)."""

    def __init__(self, *, cert: trustme.LeafCert | None = None, redirect: str | None = None,
                 status: int = 301) -> None:
        self.heard: list[tuple[str, str, str | None]] = []
        outer = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                outer.heard.append((self.command, self.path,
                                    self.headers.get("Authorization")))
                length = int(self.headers.get("Content-Length") or 0)
                body = json.loads(self.rfile.read(length)) if length else {}
                if redirect is not None:
                    self.send_response(status)
                    self.send_header("Location", redirect + self.path)
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                if self.path == "/v1/models":
                    answer: Any = {"data": [{"id": "stub"}]}
                elif self.path == "/v1/embeddings":
                    answer = {"data": [{"index": i, "embedding": [1.0, 0.0, 0.0, float(i)]}
                                       for i in range(len(body["input"]))], "model": "stub"}
                else:
                    self.send_response(404)
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                data = json.dumps(answer).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            do_POST = do_GET

            def log_message(self, *args: Any) -> None:
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.scheme = "http"
        if cert is not None:
            context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
            cert.configure_cert(context)
            self.server.socket = context.wrap_socket(self.server.socket, server_side=True)
            self.scheme = "https"
        self.url = f"{self.scheme}://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self) -> Server:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture(scope="module")
def ca() -> trustme.CA:
    return trustme.CA()


@pytest.fixture()
def ca_file(ca: trustme.CA, tmp_path: Path) -> Path:
    path = tmp_path / "private-ca.pem"
    ca.cert_pem.write_to_path(str(path))
    return path


# ---------------------------------------------------------------- a private CA (ca_cert)
def test_a_private_ca_is_trusted_for_that_server(ca: trustme.CA, ca_file: Path) -> None:
    with Server(cert=ca.issue_cert("127.0.0.1")) as server, \
            RemoteEngine(server.url, api_key=KEY, ca_cert=ca_file) as engine:
        assert engine.dims == DIMS and engine.embed(["a", "b"]).shape == (2, DIMS)
    assert server.heard and {auth for _, _, auth in server.heard} == {f"Bearer {KEY}"}


def test_a_folder_of_ca_certificates(ca: trustme.CA, tmp_path: Path) -> None:
    folder = tmp_path / "cas"
    folder.mkdir()
    trustme.CA().cert_pem.write_to_path(str(folder / "a-other.pem"))
    ca.cert_pem.write_to_path(str(folder / "b-ours.crt"))
    (folder / "README").write_text("not a certificate\n")
    with Server(cert=ca.issue_cert("127.0.0.1")) as server, \
            RemoteEngine(server.url, ca_cert=str(folder)) as engine:
        assert engine.dims == DIMS


def test_the_ca_replaces_the_default_bundle(ca_file: Path) -> None:
    """The choice documented in docs/remote-engine.md: with --embed-ca-cert, that CA alone
    is trusted for the server (a certificate a public CA issued for its host is not)."""
    assert len(ssl_context(ca_file, "https://h").get_ca_certs()) == 1


def test_cli_takes_the_ca_from_the_option_or_its_env_var(ca: trustme.CA,
                                                         ca_file: Path) -> None:
    with Server(cert=ca.issue_cert("127.0.0.1")) as server:
        for args, env in (([f"--embed-ca-cert={ca_file}"], {}),
                          ([], {"GGUF_EMBED_EMBED_CA_CERT": str(ca_file)})):
            result = CliRunner().invoke(cli, ["embed", "x", "--embed-url", server.url, *args],
                                        env=env)
            assert result.exit_code == 0, result.stderr
            assert len(json.loads(result.stdout)) == DIMS


@pytest.mark.parametrize(("make", "why"), [
    (lambda p: p / "missing.pem", "no such file"),
    (lambda p: (p / "key.txt", (p / "key.txt").write_text("hello\n"))[0],
     "not a PEM file of CA certificates"),
    (lambda p: (p / "bad.pem", (p / "bad.pem").write_text(
        "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n"))[0],
     "not a PEM file of CA certificates"),
    (lambda p: Path("/dev/zero"), "not a PEM file of CA certificates"),
    (lambda p: p, "the folder holds no PEM certificate (-----BEGIN CERTIFICATE-----)"),
])
def test_cli_bad_ca_is_one_line_naming_the_option(make: Any, why: str,
                                                  tmp_path: Path) -> None:
    path = make(tmp_path)
    result = CliRunner().invoke(cli, ["embed", "x", "--embed-url", "https://127.0.0.1:9",
                                      "--embed-ca-cert", str(path)])
    assert result.exit_code == 1 and result.stdout == ""
    assert result.stderr == f"Error: --embed-ca-cert {path}: {why}\n"


def test_a_ca_for_an_http_url_is_refused(ca_file: Path) -> None:
    with pytest.raises(InputError) as caught:
        RemoteEngine("http://127.0.0.1:9", ca_cert=ca_file)
    assert str(caught.value) == ("--embed-ca-cert is for an https:// server; "
                                 "http://127.0.0.1:9 is not encrypted: give its https:// URL")


def test_the_ca_option_needs_the_url(ca_file: Path) -> None:
    result = CliRunner().invoke(cli, ["embed", "x", "--embed-ca-cert", str(ca_file)])
    assert result.exit_code == 2 and "--embed-ca-cert needs --embed-url" in result.stderr
