"""Who can reach `serve` and `mcp --http`: a bind other machines can reach needs an API key
(or the explicit --insecure-no-auth), an empty key is an error, and the Host check (DNS
rebinding) stays on for non-loopback binds.  Nothing here binds anything but loopback: the
CLI's bind and run are replaced, and requests go in-process."""

from __future__ import annotations

import socket
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner, Result

from gguf_embed.cli import cli
from gguf_embed.http_guard import Refusal, check_request, exposure_problem, is_loopback
from gguf_embed.testing import FakeEngine

NO_MODEL = "/nonexistent/model.gguf"  # a refusal must come before any model is loaded


def refused(result: Result, *fragments: str) -> None:
    assert result.exit_code == 2, (result.exit_code, result.output, result.exception)
    error = [line for line in result.stderr.splitlines() if line.startswith("Error: ")]
    assert len(error) == 1, result.stderr
    for fragment in fragments:
        assert fragment in error[0], error[0]
    assert "Traceback" not in result.output and "serving" not in result.stderr


@pytest.mark.parametrize("host", ["0.0.0.0", "::", "192.168.1.5", "example.com", ""])
def test_serve_on_a_reachable_address_without_a_key_is_refused(host: str) -> None:
    result = CliRunner().invoke(cli, ["serve", "-m", NO_MODEL, "--host", host],
                                env={"GGUF_EMBED_API_KEY": None})
    refused(result, "--api-key", "--insecure-no-auth")


@pytest.mark.parametrize("key", ["", "   ", " k3y\n"])
def test_an_empty_or_padded_api_key_is_an_error(key: str) -> None:
    result = CliRunner().invoke(cli, ["serve", "-m", NO_MODEL, "--api-key", key])
    refused(result, "--api-key")


def test_mcp_http_follows_the_same_rule(tmp_path: Path) -> None:
    pytest.importorskip("mcp")
    result = CliRunner().invoke(cli, ["mcp", "--http", "--host", "0.0.0.0", "-m", NO_MODEL,
                                      "--db", str(tmp_path / "none.db")],
                                env={"GGUF_EMBED_API_KEY": None})
    refused(result, "--api-key")
    result = CliRunner().invoke(cli, ["mcp", "--http", "--api-key", "", "-m", NO_MODEL,
                                      "--db", str(tmp_path / "none.db")])
    refused(result, "--api-key")


@pytest.fixture
def started(monkeypatch: pytest.MonkeyPatch) -> list[Any]:
    """Replace the real bind (to loopback, port 0) and the serving loop (returns at once) and
    the model load, recording the config the server would run with."""
    import gguf_embed.cli._serve as serve_cli
    import gguf_embed.server as server

    calls: list[Any] = []
    monkeypatch.setattr(server, "bind", lambda host, port: _loopback_socket())
    monkeypatch.setattr(server, "serve", lambda engine, config, **kw: calls.append(config))
    monkeypatch.setattr(serve_cli, "load_engine", lambda *a, **kw: FakeEngine())
    return calls


def _loopback_socket() -> socket.socket:
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    return sock


def test_with_a_key_a_reachable_address_starts(started: list[Any]) -> None:
    result = CliRunner().invoke(cli, ["serve", "--host", "0.0.0.0", "--api-key", "s3cret"])
    assert result.exit_code == 0, result.output
    assert started and started[0].api_key == "s3cret" and started[0].host == "0.0.0.0"
    assert "warning" not in result.stderr


def test_insecure_no_auth_starts_and_warns(started: list[Any]) -> None:
    result = CliRunner().invoke(cli, ["serve", "--host", "0.0.0.0", "--insecure-no-auth"],
                                env={"GGUF_EMBED_API_KEY": None})
    assert result.exit_code == 0, result.output
    assert started and started[0].api_key is None
    assert "warning: serving on 0.0.0.0 without an API key" in result.stderr


def test_loopback_needs_no_key(started: list[Any]) -> None:
    for host in ("127.0.0.1", "localhost", "::1"):
        result = CliRunner().invoke(cli, ["serve", "--host", host],
                                    env={"GGUF_EMBED_API_KEY": None})
        assert result.exit_code == 0, result.output
        assert "warning" not in result.stderr
    assert len(started) == 3


def test_the_rule_itself() -> None:
    assert all(is_loopback(h) for h in ("127.0.0.1", "127.8.0.1", "::1", "[::1]", "LOCALHOST"))
    assert not any(is_loopback(h) for h in ("0.0.0.0", "::", "", "10.0.0.2", "myhost"))
    assert exposure_problem("127.0.0.1", None, False) is None
    assert exposure_problem("0.0.0.0", "k", False) is None
    assert exposure_problem("0.0.0.0", None, True) is None
    assert exposure_problem("0.0.0.0", None, False)
    assert exposure_problem("127.0.0.1", "", False)


def status(host_header: str, *, bound: str = "0.0.0.0", key: str | None = None,
           auth: str | None = None) -> int:
    headers = {"host": host_header}
    if auth:
        headers["authorization"] = f"Bearer {auth}"
    try:
        check_request(headers, host=bound, port=8000, api_key=key)
    except Refusal as refusal:
        return refusal.status
    return 200


def test_host_check_on_non_loopback_binds() -> None:
    # without a key (--insecure-no-auth): IP addresses and this machine's names only, so a
    # page on a rebinding domain cannot reach it through the browser
    assert status("evil.example:8000") == 403
    assert status("192.168.1.5:8000") == 200
    assert status("[fe80::1]:8000") == 200
    assert status(f"{socket.gethostname()}:8000") == 200
    assert status("localhost:8000") == 200
    assert status("192.168.1.5:9999") == 403  # not the bound port
    assert status("10.0.0.9:8000", bound="10.0.0.9") == 200
    assert status("evil.example:8000", bound="10.0.0.9") == 403
    # with a key any name passes the Host check (a proxy's), and the key decides
    assert status("proxy.example:8000", key="k") == 401
    assert status("proxy.example:8000", key="k", auth="k") == 200
    # loopback binds keep their loopback-only rule
    assert status("evil.example:8000", bound="127.0.0.1", key="k", auth="k") == 403
    assert status("localhost:8000", bound="127.0.0.1") == 200


def test_a_keyed_server_on_all_interfaces_in_process() -> None:
    pytest.importorskip("starlette")
    from starlette.testclient import TestClient

    from gguf_embed.server import ServerConfig, create_app

    app = create_app(FakeEngine(), ServerConfig(model_name="fake", host="0.0.0.0", port=8000,
                                                api_key="s3cret", batch_window=0))
    with TestClient(app, base_url="http://gpu-box.lan:8000") as client:
        assert client.get("/v1/models").status_code == 401
        ok = client.get("/v1/models", headers={"authorization": "Bearer s3cret"})
        assert ok.status_code == 200
