"""The remote engine's TLS and redirects, mostly from the attacker's side: certificates that
fail verification (not retried, and saying why), a private CA given with --embed-ca-cert
(trusted for that server only), and redirects (never followed: the API key goes nowhere else).
Servers are little http.server stubs on 127.0.0.1, certificates from trustme."""

from __future__ import annotations

import datetime
import json
from pathlib import Path
from typing import Any

import httpx
import pytest
import trustme
from click.testing import CliRunner

from gguf_embed import EngineUnavailable, RemoteEngine
from gguf_embed._remote_tls import ssl_context
from gguf_embed.cli import cli
from gguf_embed.errors import InputError
from tests.support import local_servers
from tests.support.local_servers import DIMS, KEY, Server

ca, ca_file = local_servers.ca, local_servers.ca_file  # the private CA fixtures, shared


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


# ---------------------------------------------------------------- certificates not trusted
def test_an_untrusted_certificate_fails_at_once_saying_why(ca: trustme.CA) -> None:
    sleeps: list[float] = []
    with Server(cert=ca.issue_cert("127.0.0.1")) as server, \
            pytest.raises(EngineUnavailable) as caught:
        RemoteEngine(server.url, api_key=KEY, sleep=sleeps.append)
    assert sleeps == []  # not retried: it will not fix itself
    assert str(caught.value) == (
        f"the embedding server at {server.url} has a certificate that is not trusted "
        f"(unable to get local issuer certificate): if a private CA signed it, pass that "
        f"CA's certificate with --embed-ca-cert")
    assert server.heard == []


@pytest.mark.parametrize(("cert", "why", "advice"), [
    ({"identities": ["example.org"]}, "IP address mismatch, certificate is not valid for "
     "'127.0.0.1'", "give --embed-url the host name or address the certificate is for"),
    ({"identities": ["127.0.0.1"], "not_after": datetime.datetime(2020, 1, 1)},
     "certificate has expired", "renew the server's certificate, or check this machine's "
     "clock"),
])
def test_a_certificate_of_the_trusted_ca_can_still_be_wrong(
        ca: trustme.CA, ca_file: Path, cert: dict[str, Any], why: str, advice: str) -> None:
    sleeps: list[float] = []
    cert = dict(cert)
    leaf = ca.issue_cert(*cert.pop("identities"), **cert)
    with Server(cert=leaf) as server, pytest.raises(EngineUnavailable) as caught:
        RemoteEngine(server.url, ca_cert=ca_file, sleep=sleeps.append)
    assert str(caught.value) == (f"the embedding server at {server.url} has a certificate "
                                 f"that is not trusted ({why}): {advice}")
    assert sleeps == [] and server.heard == []


def test_cli_untrusted_certificate_is_one_line(ca: trustme.CA) -> None:
    with Server(cert=ca.issue_cert("127.0.0.1")) as server:
        result = CliRunner().invoke(cli, ["embed", "hello", "--embed-url", server.url],
                                    env={"GGUF_EMBED_EMBED_API_KEY": KEY})
    assert result.exit_code == 1 and result.stdout == ""
    assert result.stderr == (f"Error: the embedding server at {server.url} has a certificate "
                             f"that is not trusted (unable to get local issuer certificate): "
                             f"if a private CA signed it, pass that CA's certificate with "
                             f"--embed-ca-cert\n")
    assert KEY not in result.stderr and server.heard == []


def test_a_ca_for_one_server_does_not_make_others_trusted(ca: trustme.CA,
                                                          ca_file: Path) -> None:
    """From the attacker's side: a server with a certificate of another CA is refused though
    a CA was given, and a CA given to one engine is not trusted by the next."""
    with Server(cert=trustme.CA().issue_cert("127.0.0.1")) as rogue, \
            pytest.raises(EngineUnavailable, match=r"check that --embed-ca-cert .* holds"):
        RemoteEngine(rogue.url, api_key=KEY, ca_cert=ca_file)
    assert rogue.heard == []
    with Server(cert=ca.issue_cert("127.0.0.1")) as server:
        RemoteEngine(server.url, ca_cert=ca_file).close()
        with pytest.raises(EngineUnavailable, match="not trusted"):
            RemoteEngine(server.url, retries=1)


# ---------------------------------------------------------------- redirects
@pytest.mark.parametrize("status", [301, 302, 307, 308])
def test_a_redirect_is_not_followed_and_names_where_it_points(status: int) -> None:
    """From the attacker's side: a server that redirects elsewhere never gets the key sent
    on, and the user is told where it points."""
    with Server() as elsewhere, Server(redirect=elsewhere.url, status=status) as server:
        for model, path in ((None, "/v1/models"), ("m", "/v1/embeddings")):
            with pytest.raises(EngineUnavailable) as caught:
                RemoteEngine(server.url, api_key=KEY, model=model)
            assert str(caught.value) == (
                f"the embedding server at {server.url} redirects {path} to {elsewhere.url}"
                f"{path} (HTTP {status}); redirects are not followed, so that the API key "
                f"goes nowhere else: if you trust {elsewhere.url}, give it to --embed-url")
    assert elsewhere.heard == [] and server.heard


def test_cli_redirect_is_one_line_without_the_key() -> None:
    with Server() as elsewhere, Server(redirect=elsewhere.url + "/x?token=1") as server:
        result = CliRunner().invoke(cli, ["embed", "x", "--embed-url", server.url,
                                          "--embed-model", "m"],
                                    env={"GGUF_EMBED_EMBED_API_KEY": KEY})
    assert result.exit_code == 1 and result.stdout == "" and KEY not in result.stderr
    assert result.stderr == (
        f"Error: the embedding server at {server.url} redirects /v1/embeddings to "
        f"{elsewhere.url}/x?token=1/v1/embeddings (HTTP 301); redirects are not followed, so "
        f"that the API key goes nowhere else: if you trust it, give that URL to "
        f"--embed-url\n")
    assert elsewhere.heard == []


def test_a_redirect_of_health_alone_is_no_error() -> None:
    """The probe of /health is optional: a server that redirects it (a web UI) but answers
    the API is used."""
    def server(request: httpx.Request) -> httpx.Response:
        if request.url.path == "/health":
            return httpx.Response(302, headers={"Location": "/login"})
        if request.url.path == "/v1/models":
            return httpx.Response(200, json={"data": [{"id": "m"}]})
        if request.url.path == "/v1/embeddings":
            return httpx.Response(200, json={"data": [{"index": 0, "embedding": [1.0, 2.0]}]})
        return httpx.Response(404)

    with RemoteEngine("http://box:1", transport=httpx.MockTransport(server)) as engine:
        assert engine.dims == 2 and engine.server_model == "m"
