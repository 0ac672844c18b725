"""TLS and redirects for :mod:`gguf_embed._remote_http`: the certificates an https:// server
is verified with (``ca_cert``: a private CA), and the one-line errors for a certificate that
is not trusted and for a redirect, neither of which retrying would fix.

``ca_cert`` *replaces* the default bundle for that server: the CA certificates it names are
the only ones trusted, so that a certificate any public CA issued for the host is not
enough.  Verification itself can never be turned off.
"""

from __future__ import annotations

import os
import ssl
from pathlib import Path
from typing import Any

from ._remote_util import clean_url
from .errors import EngineUnavailable, InputError, first_line, quoted

PEM_MARK = b"-----BEGIN CERTIFICATE-----"
MAX_BYTES = 16 << 20  # a CA bundle is well under 1 MB
# OpenSSL's verify codes that call for advice other than "name the CA" (X509_V_ERR_*)
_NOT_YET_VALID, _EXPIRED, _NAME_MISMATCH = 9, 10, (62, 64)  # 62: host name, 64: IP address


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


def untrusted_error(exc: BaseException, url: str, ca_cert: Any) -> EngineUnavailable | None:
    """The error for a connection refused because the server's certificate failed
    verification (found by type in the exception's causes), else None."""
    import httpx

    if not isinstance(exc, httpx.ConnectError):
        return None
    seen: set[int] = set()
    cause: BaseException | None = exc
    while cause is not None and id(cause) not in seen:
        if isinstance(cause, ssl.SSLCertVerificationError):
            break
        seen.add(id(cause))
        cause = cause.__cause__ or cause.__context__
    if not isinstance(cause, ssl.SSLCertVerificationError):
        return None
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


__all__ = ["redirect_error", "ssl_context", "untrusted_error"]
