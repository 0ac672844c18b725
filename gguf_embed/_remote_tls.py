"""TLS, names and redirects for :mod:`gguf_embed._remote_http`: the certificates an https://
server is verified with (``ca_cert``: a private CA), and the one-line errors for failures that
retrying would not fix: a certificate that is not trusted, a TLS handshake that fails (an
https:// URL naming a plain-HTTP port), a host name that is not known, an http:// URL naming a
port that speaks HTTPS, and a redirect.  Found by type (and OpenSSL's and getaddrinfo's codes)
in the exception's causes, never by message text.

Still retried, as a server that is starting may do them: the connection refused, reset or
closed (also during the TLS handshake: Docker's port proxy accepts and closes while the
container starts), a timeout, a name that cannot be looked up *now* (``EAI_AGAIN``).

``ca_cert`` *replaces* the default bundle for that server: the CA certificates it names are
the only ones trusted, so that a certificate any public CA issued for the host is not
enough.  Verification itself can never be turned off.
"""

from __future__ import annotations

import os
import socket
import ssl
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import SplitResult, urlsplit

from ._remote_util import clean_url
from .errors import EngineUnavailable, InputError, first_line, quoted

PEM_MARK = b"-----BEGIN CERTIFICATE-----"
MAX_BYTES = 16 << 20  # a CA bundle is well under 1 MB
# OpenSSL's verify codes that call for advice other than "name the CA" (X509_V_ERR_*)
_NOT_YET_VALID, _EXPIRED, _NAME_MISMATCH = 9, 10, (62, 64)  # 62: host name, 64: IP address
# ssl errors that are the connection ending, as it may while a server starts: not TLS failing
_CLOSED = (ssl.SSLEOFError, ssl.SSLZeroReturnError, ssl.SSLSyscallError)
# getaddrinfo's answers that the name does not exist (EAI_AGAIN, "try again", is retried)
_UNKNOWN_NAME = frozenset(code for code in (socket.EAI_NONAME, getattr(socket, "EAI_NODATA",
                                                                        None)) if code)
TLS_PROBE_TIMEOUT = 3.0  # seconds for answers_tls's handshake


def ssl_context(ca_cert: str | os.PathLike[str], url: str) -> ssl.SSLContext:
    """A client context that trusts only the CA certificates in ``ca_cert``: a PEM file (one
    or more certificates), or a folder whose files hold them (hidden files and files without
    a PEM certificate are skipped).  A bad path or file is an :class:`InputError` naming it."""
    path = Path(ca_cert).expanduser()
    if not url.startswith("https://"):
        raise InputError(f"--embed-ca-cert is for an https:// server; {url} is not "
                         f"encrypted: give its https:// URL", param="ca_cert")
    if path.is_dir():
        files = [p for p in sorted(path.iterdir())
                 if not p.name.startswith(".") and p.is_file() and PEM_MARK in _read(p)]
        if not files:
            raise InputError(f"--embed-ca-cert {quoted(path)}: the folder holds no PEM "
                             f"certificate ({PEM_MARK.decode()})", param="ca_cert")
    else:
        _read(path)
        files = [path]
    context: ssl.SSLContext | None = None
    for file in files:
        try:  # given a cafile, the default context loads that instead of the default bundle
            if context is None:
                context = ssl.create_default_context(cafile=file)
            else:
                context.load_verify_locations(cafile=file)
        except (ssl.SSLError, ValueError) as exc:
            raise InputError(f"--embed-ca-cert {quoted(file)}: not a PEM file of CA "
                             f"certificates", param="ca_cert") from exc
    assert context is not None
    return context


def _read(path: Path) -> bytes:
    """The file's bytes; one that is missing, unreadable, not a regular file (a device, a
    FIFO) or over :data:`MAX_BYTES` is an :class:`InputError` naming it."""
    try:
        if not path.is_file() or path.stat().st_size > MAX_BYTES:
            what = "no such file" if not path.exists() else "not a PEM file of CA certificates"
            raise InputError(f"--embed-ca-cert {quoted(path)}: {what}", param="ca_cert")
        with path.open("rb") as file:
            return file.read(MAX_BYTES + 1)
    except OSError as exc:
        raise InputError(f"--embed-ca-cert {quoted(path)}: cannot read it "
                         f"({exc.strerror or type(exc).__name__})", param="ca_cert") from exc


def _causes(exc: BaseException) -> Iterator[BaseException]:
    seen: set[int] = set()
    cause: BaseException | None = exc
    while cause is not None and id(cause) not in seen:
        yield cause
        seen.add(id(cause))
        cause = cause.__cause__ or cause.__context__


def permanent_error(exc: BaseException, url: str, ca_cert: Any) -> EngineUnavailable | None:
    """The error for a transport failure that retrying will not fix (the module docstring),
    else None."""
    for cause in _causes(exc):
        if isinstance(cause, ssl.SSLCertVerificationError):
            return _untrusted(cause, url, ca_cert)
        if isinstance(cause, ssl.SSLError) and not isinstance(cause, _CLOSED):
            reason = (cause.reason or "").replace("_", " ").lower() or first_line(cause)
            return EngineUnavailable(
                f"the embedding server at {url} failed the TLS handshake ({reason}): if it "
                f"serves plain HTTP on that port, give --embed-url {_swap(url, 'http')}; "
                f"else check its TLS set-up", url=url)
        if isinstance(cause, socket.gaierror) and cause.errno in _UNKNOWN_NAME:
            host = urlsplit(url).hostname
            return EngineUnavailable(
                f"the embedding server at {url} cannot be found: the host name {host} is not "
                f"known ({cause.strerror or 'no address'}): check the name in --embed-url",
                url=url)
    return None


def retry_reason(exc: BaseException) -> str:
    """What a transient failure is called in the error after the last try."""
    import httpx

    if isinstance(exc, httpx.ConnectError) and any(  # refused is before any handshake
            isinstance(c, (ssl.SSLError, ConnectionResetError)) for c in _causes(exc)):
        return "the server closed the connection during the TLS handshake"
    return first_line(exc, empty=type(exc).__name__, limit=200)


def answers_tls(url: str) -> bool:
    """Whether the http:// server at ``url`` completes a TLS handshake, so speaks HTTPS on
    that port (asked after a failure that could mean so).  Nothing is sent but the handshake
    (no request, no key), so the certificate is not checked: the answer is only advice."""
    address = _address(url)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname, context.verify_mode = False, ssl.CERT_NONE
    try:
        with socket.create_connection(address, timeout=TLS_PROBE_TIMEOUT) as sock, \
                context.wrap_socket(sock):
            return True
    except (OSError, ValueError):  # ssl.SSLError is an OSError
        return False


def accepts_connections(url: str, timeout: float) -> bool:
    """Whether the server at ``url`` accepts a TCP connection within ``timeout`` seconds
    (asked after an https:// connect timeout: if it does, the TLS handshake went unanswered;
    nothing is sent)."""
    address = _address(url)
    try:
        with socket.create_connection(address, timeout=timeout):
            return True
    except (OSError, ValueError):
        return False


def https_error(url: str) -> EngineUnavailable:
    return EngineUnavailable(f"the embedding server at {url} speaks HTTPS on that port: give "
                             f"--embed-url {_swap(url, 'https')}", url=url)


def _port(parts: SplitResult) -> int:
    """The URL's port, or its scheme's default."""
    return parts.port or (443 if parts.scheme == "https" else 80)


def _address(url: str) -> tuple[str, int]:
    """(host, port) to connect to for ``url`` (a malformed port raises ValueError)."""
    parts = urlsplit(url)
    return parts.hostname or "", _port(parts)


def _swap(url: str, scheme: str) -> str:
    """``url`` with the other scheme and its port kept (the old default port made explicit)."""
    parts = urlsplit(url)
    netloc = parts.netloc if parts.port else f"{parts.netloc}:{_port(parts)}"
    return f"{scheme}://{netloc}{parts.path}"


def _untrusted(cause: ssl.SSLCertVerificationError, url: str,
               ca_cert: Any) -> EngineUnavailable:
    """The error for a certificate that failed verification."""
    reason = (cause.verify_message or first_line(cause, limit=200) or "unknown").rstrip(".")
    if cause.verify_code in _NAME_MISMATCH:
        advice = "give --embed-url the host name or address the certificate is for"
    elif cause.verify_code in (_EXPIRED, _NOT_YET_VALID):
        advice = "renew the server's certificate, or check this machine's clock"
    elif ca_cert is not None:
        advice = f"check that --embed-ca-cert {quoted(ca_cert)} holds the CA that signed it"
    else:
        advice = "if a private CA signed it, pass that CA's certificate with --embed-ca-cert"
    return EngineUnavailable(f"the embedding server at {url} has a certificate that is not "
                             f"trusted ({reason}): {advice}", url=url)


def redirect_error(url: str, path: str, response: Any) -> EngineUnavailable:
    """The error for a redirect answer to ``url`` + ``path``: where it points, and what to
    give --embed-url instead."""
    import httpx

    location = response.headers.get("location", "")
    try:
        target = str(response.request.url.join(location))
    except (httpx.InvalidURL, ValueError):  # shown as sent
        target = location
    target = quoted("".join(c if c.isprintable() else "?" for c in target), 300)
    base = target.removesuffix(path)  # the root to give --embed-url, when it is one
    try:
        root = clean_url(base) if base != target else None
    except InputError:
        root = None
    trust = (f"if you trust {root}, give it to --embed-url" if root else
             "if you trust it, give that URL to --embed-url")
    return EngineUnavailable(f"the embedding server at {url} redirects {path} to {target} "
                             f"(HTTP {response.status_code}); redirects are not followed, so "
                             f"that the API key goes nowhere else: {trust}", url=url)


__all__ = ["accepts_connections", "answers_tls", "https_error", "permanent_error",
           "redirect_error", "retry_reason", "ssl_context"]
