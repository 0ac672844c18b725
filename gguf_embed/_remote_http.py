"""One embedding server's HTTP, for :class:`~gguf_embed.remote_engine.RemoteEngine`: the
client, requests retried with backoff, and the errors, each naming the server's URL.

Connection errors, timeouts, 429 and 5xx are retried ``retries`` times with exponential
backoff (``Retry-After`` honoured, capped at 30 s), then
:class:`~gguf_embed.errors.EngineUnavailable` names the URL; 401/403 say the API key was
refused, 400 that the input was.  A certificate that fails verification is not retried (it
will not fix itself): the error says why it is not trusted.  The API key goes in the
``Authorization`` header to this server only: redirects are not followed (a redirect is an
error naming where it points), and the environment's proxies and ``SSL_CERT_FILE`` are not
read.  Needs httpx (``pip install "gguf-embed[remote]"``), imported when a client is made.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from ._remote_tls import redirect_error, ssl_context, untrusted_error
from ._remote_util import server_message
from .errors import EngineError, EngineUnavailable, InputError, first_line

RETRY_STATUS = frozenset({408, 425, 429, 500, 502, 503, 504})


def _httpx() -> Any:
    try:
        import httpx
    except ImportError as exc:
        raise EngineError('the remote engine (--embed-url) needs httpx: pip install '
                          '"gguf-embed[remote]"') from exc
    return httpx


class ServerClient:
    """Requests to the server at ``url`` (its root, already checked by ``clean_url``)."""

    def __init__(self, url: str, *, api_key: str | None, retries: int, backoff: float,
                 timeout: float, transport: Any = None, ca_cert: Any = None,
                 sleep: Callable[[float], None] | None = None) -> None:
        httpx = _httpx()
        self.url, self.retries, self.backoff = url, retries, backoff
        self.ca_cert = ca_cert
        self.redirect: EngineUnavailable | None = None  # the last one an optional probe met
        self._sleep = sleep or time.sleep
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        # An http:// server gets no TLS (redirects are not followed, proxies not read): loading
        # the CA bundle for it was 20-50 ms of a one-shot search.  https:// is verified, with
        # the default bundle or, given ca_cert, with those CA certificates only.
        verify: Any = url.startswith("https://")
        if ca_cert is not None:
            verify = ssl_context(ca_cert, url)
        self._client = httpx.Client(base_url=url, headers=headers, transport=transport,
                                    timeout=httpx.Timeout(timeout, connect=10.0),
                                    verify=verify, follow_redirects=False, trust_env=False)

    def close(self) -> None:
        self._client.close()

    def json(self, method: str, path: str, body: Any, *, optional: bool = False) -> Any:
        """The JSON answer of one request, retried as the module docstring says; with
        ``optional``, None for an answer that is not a 2xx (a probe of what the server is)."""
        httpx = _httpx()
        why, delay = "", 0.0
        for attempt in range(self.retries):
            if attempt:
                self._sleep(delay)
            delay = min(self.backoff * 2 ** attempt, 30.0)
            try:
                response = self._client.request(method, path, json=body)
            except httpx.TransportError as exc:
                untrusted = untrusted_error(exc, self.url, self.ca_cert)
                if untrusted is not None:
                    raise untrusted from exc
                why = first_line(exc, empty=type(exc).__name__, limit=200)
                continue
            if response.status_code in RETRY_STATUS:
                why = f"HTTP {response.status_code}"
                after = response.headers.get("retry-after", "")
                if after.isdigit():
                    delay = min(float(after), 30.0)
                continue
            if response.status_code in (401, 403):
                raise EngineUnavailable(f"the embedding server at {self.url} refused the API "
                                        f"key (HTTP {response.status_code}): pass the right "
                                        f"one with --embed-api-key", url=self.url)
            if response.has_redirect_location:
                moved = redirect_error(self.url, path, response)
                if not optional:
                    raise moved
                self.redirect = moved
                return None
            if response.is_success:
                try:
                    return response.json()
                except ValueError as exc:
                    if optional:
                        return None
                    raise EngineError(f"the server at {self.url} answered {path} with "
                                      f"something that is not JSON") from exc
            if optional:
                return None
            message = server_message(response)
            if response.status_code == 400:
                raise InputError(f"the embedding server at {self.url} refused the input: "
                                 f"{message}", param="input")
            raise EngineUnavailable(f"the embedding server at {self.url} answered {path} with "
                                    f"HTTP {response.status_code}: {message}", url=self.url)
        raise EngineUnavailable(f"the embedding server at {self.url} cannot be reached "
                                f"({why}, {self.retries} tries): start it, or check "
                                f"--embed-url", url=self.url)
