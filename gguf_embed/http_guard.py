"""The HTTP guard every gguf-embed server puts in front of its routes: a pure-ASGI middleware.

* DNS rebinding: a request whose ``Host`` is not the bound address is refused with 403 (a
  loopback bind takes any loopback name; a non-loopback bind takes IP addresses, the bound
  name and this machine's names, or, with an API key, any name: a rebinding page cannot
  know the key), and a ``Host`` that does not parse as ``host[:port]`` with 400.
* Cross-origin: a browser request whose ``Origin`` is not a loopback origin, nor one of
  ``origins`` (``serve --cors-origin``), is refused (403).
* The API key, when set, must come as ``Authorization: Bearer KEY``, compared in constant time
  (401 otherwise).

Refusals are JSON in OpenAI's error envelope ``{"error": {"message", "type", "param",
"code"}}``.  Non-HTTP scopes (lifespan) pass through untouched.

    app = HostGuard(app, host="127.0.0.1", port=8000, api_key=None)

:func:`exposure_problem` is the rule the CLI applies before binding: a non-loopback address
without an API key is refused unless the user says ``--insecure-no-auth``; an empty key is an
error.
"""

from __future__ import annotations

import contextlib
import functools
import hmac
import ipaddress
import json
import socket
from collections.abc import Awaitable, Callable, MutableMapping, Sequence
from typing import Any
from urllib.parse import urlsplit

LOOPBACK = {"localhost", "127.0.0.1", "::1", "[::1]"}

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]


class Refusal(Exception):
    """Why a request was refused, as an HTTP status and OpenAI-style error fields."""

    def __init__(self, status: int, message: str, type_: str, code: str) -> None:
        super().__init__(message)
        self.status, self.message, self.type, self.code = status, message, type_, code


def check_request(headers: dict[str, str], *, host: str, port: int,
                  api_key: str | None, origins: Sequence[str] = ()) -> None:
    """Raise :class:`Refusal` unless a request with these (lower-cased) headers may pass."""
    sent_host = headers.get("host", "")
    if not valid_host(sent_host):
        raise Refusal(400, "the Host header is not a valid host[:port]",
                      "invalid_request_error", "invalid_host")
    if not host_allowed(sent_host, host, port, keyed=bool(api_key)):
        raise Refusal(403, "Host header does not match the server address", "permission_error",
                      "forbidden_host")
    origin = headers.get("origin")
    if origin and not loopback_origin(origin) and origin not in origins and "*" not in origins:
        raise Refusal(403, f"cross-origin requests from {origin} are not allowed",
                      "permission_error", "forbidden_origin")
    if api_key:
        sent = headers.get("authorization", "")
        token = sent[7:] if sent.lower().startswith("bearer ") else ""
        if not hmac.compare_digest(token.encode(), api_key.encode()):
            raise Refusal(401, "missing or wrong API key (Authorization: Bearer KEY)",
                          "authentication_error", "invalid_api_key")


class HostGuard:
    """ASGI middleware refusing requests that fail :func:`check_request`.  ``port`` may be
    a callable, read per request (a server bound to port 0 learns its port late)."""

    def __init__(self, app: ASGIApp, *, host: str, port: int | Callable[[], int],
                 api_key: str | None = None, origins: Sequence[str] = ()) -> None:
        self.app = app
        self.origins = tuple(origins)  # cross-origin callers allowed (serve --cors-origin)
        self.host = host
        self.port = port
        self.api_key = api_key

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return
        headers = {k.decode("latin-1").lower(): v.decode("latin-1")
                   for k, v in scope.get("headers", [])}
        port = self.port() if callable(self.port) else self.port
        try:
            check_request(headers, host=self.host, port=port, api_key=self.api_key,
                          origins=self.origins)
        except Refusal as refusal:
            scope.setdefault("state", {})["error"] = refusal.code  # for a request log
            if scope["type"] == "websocket":
                await send({"type": "websocket.close", "code": 1008})
                return
            await _send_refusal(send, refusal)
            return
        await self.app(scope, receive, send)


async def _send_refusal(send: Send, refusal: Refusal) -> None:
    body = json.dumps({"error": {"message": refusal.message, "type": refusal.type,
                                 "param": None, "code": refusal.code}}).encode("utf-8")
    await send({"type": "http.response.start", "status": refusal.status,
                "headers": [(b"content-type", b"application/json"),
                            (b"content-length", str(len(body)).encode("ascii"))]})
    await send({"type": "http.response.body", "body": body})


def valid_host(host: str) -> bool:
    """A Host header that parses as host[:port] (``127.0.0.1:abc`` does not)."""
    try:
        parts = urlsplit(f"//{host}")
        _ = parts.port
    except ValueError:
        return False
    return not host or parts.hostname is not None


def host_allowed(sent: str, host: str, port: int, *, keyed: bool = False) -> bool:
    """Whether a (valid) Host header names the address the server is bound to: any loopback
    name for a loopback bind; for any other bind an IP address, the bound name or one of
    this machine's names, or any name at all when an API key guards the server (``keyed``)."""
    parts = urlsplit(f"//{sent}")
    name = (parts.hostname or "").lower()
    sent_port = parts.port
    if sent_port is not None and sent_port != port:
        return False
    bound = host.strip("[]").lower()
    if is_loopback(host):
        names = LOOPBACK | {bound}
        return name in {n.strip("[]") for n in names}
    if keyed:
        return True
    if name == bound or name in {n.strip("[]") for n in LOOPBACK} or name in _own_names():
        return True
    try:
        ipaddress.ip_address(name)
    except ValueError:
        return False
    return True  # an IP address: a rebinding page's name never is one


@functools.cache
def _own_names() -> frozenset[str]:
    """This machine's names, as clients on its network may call it."""
    names = set()
    with contextlib.suppress(OSError):
        short = socket.gethostname().lower()
        names |= {short, f"{short}.local", socket.getfqdn().lower()}
    return frozenset(n for n in names if n)


def is_loopback(host: str) -> bool:
    """Whether binding ``host`` keeps a server on this machine (127.0.0.0/8, ::1,
    localhost); all interfaces (0.0.0.0, ::, "") and any other address or name do not."""
    bare = host.strip("[]").lower()
    if bare == "localhost":
        return True
    try:
        return ipaddress.ip_address(bare).is_loopback
    except ValueError:
        return False


def exposure_problem(host: str, api_key: str | None, insecure_no_auth: bool) -> str | None:
    """Why serving on ``host`` with ``api_key`` is refused, or None: an empty key, or a
    non-loopback bind without a key (unless ``insecure_no_auth``)."""
    if api_key is not None and not api_key.strip():
        return "--api-key is empty: give a key (clients send 'Authorization: Bearer KEY')"
    if api_key is not None and api_key != api_key.strip():
        return ("--api-key has spaces or a line break around it (clients would never send "
                "it so): give the key alone")
    if not api_key and not is_loopback(host) and not insecure_no_auth:
        return (f"--host {host or '(all interfaces)'} is reachable from other machines: "
                f"give --api-key KEY (or GGUF_EMBED_API_KEY), or pass --insecure-no-auth to "
                f"serve without one")
    return None


def loopback_origin(origin: str) -> bool:
    parts = urlsplit(origin)
    return parts.scheme in ("http", "https") and (parts.hostname or "") in {
        "localhost", "127.0.0.1", "::1"}


__all__ = ["HostGuard", "Refusal", "check_request", "exposure_problem", "host_allowed",
           "is_loopback", "loopback_origin", "valid_host"]
