"""One embedding server's HTTP, for :class:`~gguf_embed.remote_engine.RemoteEngine`: the
client, requests retried with backoff, and the errors, each naming the server's URL.

Transient failures are retried ``retries`` times with exponential backoff (``Retry-After``
honoured, in seconds or as a date, capped at 30 s), then
:class:`~gguf_embed.errors.EngineUnavailable` names the URL: the connection refused, reset or
closed, a connect timeout, 408, 425, 429 and 5xx.  A server that took the request and did not
answer within the timeout (``probe_timeout`` for the start-up probes, ``timeout`` for the rest)
is not retried: the same request would wait as long again (5 tries of 300 s were 25 minutes
of silence), so the error says so at once, naming the request and the seconds; so is an
https:// server that takes the TCP connection and never answers the TLS handshake (httpx's
connect timeout: :func:`~gguf_embed._remote_tls.accepts_connections` tells it apart).
What retrying will not fix fails at once, saying what to do: a certificate that fails
verification, a failed TLS handshake, a host name that is not known, an http:// URL naming a
port that speaks HTTPS (:mod:`gguf_embed._remote_tls`), 401/403 (the API key), 404/405 and an
answer that is not JSON (not an embeddings API: check the URL), 400 (the input refused).  The
API key goes in the ``Authorization`` header to this server only: redirects are not followed (a
redirect is an error naming where it points), and the environment's proxies and
``SSL_CERT_FILE`` are not read.  Needs httpx (``pip install "gguf-embed[remote]"``), imported
when a client is made.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import datetime, timezone
from email.utils import parsedate_to_datetime
from typing import Any

from ._remote_tls import (
    accepts_connections,
    answers_tls,
    https_error,
    permanent_error,
    redirect_error,
    retry_reason,
    ssl_context,
)
from ._remote_util import server_message
from .errors import EngineError, EngineUnavailable, InputError, first_line, quoted

RETRY_STATUS = frozenset({408, 425, 429, 500, 502, 503, 504})
CONNECT_TIMEOUT = 10.0  # seconds to connect (a firewall that drops packets: retried)
PROBE_TIMEOUT = 10.0  # seconds for a start-up probe's answer (see ServerClient)
NOT_AN_API = ("check that --embed-url is the root of an OpenAI-compatible embeddings API (the "
              "URL before /v1/embeddings) and that --embed-model names a model it serves")


def _httpx() -> Any:
    try:
        import httpx
    except ImportError as exc:
        raise EngineError('the remote engine (--embed-url) needs httpx: pip install '
                          '"gguf-embed[remote]"') from exc
    return httpx


class ServerClient:
    """Requests to the server at ``url`` (its root, already checked by ``clean_url``).

    ``timeout``: the seconds to wait for an answer (an embedding request may take long: a
    big batch on a CPU server).  ``probe_timeout`` (at most ``timeout``): the same for the
    start-up probes (``/health``, ``/tokenize``, ``/v1/models``), which every server answers
    in milliseconds without touching its model (llama-server answers 503 while it loads, and
    that is retried), so that a port that accepts connections and never answers (a stopped
    or stuck server, another service) is one line after seconds, not a silent wait."""

    def __init__(self, url: str, *, api_key: str | None, retries: int, backoff: float,
                 timeout: float, probe_timeout: float = PROBE_TIMEOUT, transport: Any = None,
                 ca_cert: Any = None, sleep: Callable[[float], None] | None = None) -> None:
        httpx = _httpx()
        self.url, self.retries, self.backoff = url, retries, backoff
        self.timeout, self.probe_timeout = timeout, min(probe_timeout, timeout)
        self.ca_cert = ca_cert
        self.redirect: EngineUnavailable | None = None  # the last one an optional probe met
        self.missed = ""  # why the last optional probe answered None
        self._key_problem, self._key_advice = (("refused the API key", "the right one")
                                               if api_key else ("needs an API key", "it"))
        self._transport, self._tls_asked = transport, False
        self._sleep = sleep or time.sleep
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        # An http:// server gets no TLS (redirects are not followed, proxies not read): loading
        # the CA bundle for it was 20-50 ms of a one-shot search.  https:// is verified, with
        # the default bundle or, given ca_cert, with those CA certificates only.
        verify: Any = url.startswith("https://")
        if ca_cert is not None:
            verify = ssl_context(ca_cert, url)
        try:
            self._client = httpx.Client(base_url=url, headers=headers, transport=transport,
                                        timeout=httpx.Timeout(timeout, connect=CONNECT_TIMEOUT),
                                        verify=verify, follow_redirects=False, trust_env=False)
        except httpx.InvalidURL as exc:
            raise InputError(f"--embed-url {quoted(url)} is not a valid URL "
                             f"({first_line(exc, limit=100)})", param="embed_url") from exc

    def close(self) -> None:
        self._client.close()

    def json(self, method: str, path: str, body: Any, *, optional: bool = False,
             probe: bool = False) -> Any:
        """The JSON answer of one request, retried as the module docstring says; with
        ``optional``, None for an answer that is not a 2xx (a probe of what the server is),
        and :attr:`missed` says what it was; with ``probe``, waited for ``probe_timeout``."""
        httpx = _httpx()
        why, delay, self.missed = "", 0.0, ""
        connect = min(CONNECT_TIMEOUT, self.probe_timeout) if probe else CONNECT_TIMEOUT
        timeout = (httpx.Timeout(self.probe_timeout, connect=connect) if probe
                   else httpx.USE_CLIENT_DEFAULT)
        for attempt in range(self.retries):
            if attempt:
                self._sleep(delay)
            delay = min(self.backoff * 2 ** attempt, 30.0)
            try:
                response = self._client.request(method, path, json=body, timeout=timeout)
            except (httpx.ReadTimeout, httpx.WriteTimeout) as exc:
                raise self._silent(f"{method} {path}", self.probe_timeout if probe
                                   else self.timeout, probe) from exc
            except httpx.ConnectTimeout as exc:  # for https://: TCP, or the TLS handshake
                if self.url.startswith("https://") and not self._transport \
                        and accepts_connections(self.url, connect):
                    raise self._silent("the TLS handshake", connect, probe) from exc
                why = retry_reason(exc)
                continue
            except httpx.TransportError as exc:
                permanent = permanent_error(exc, self.url, self.ca_cert)
                if permanent is None and not isinstance(
                        exc, (httpx.ConnectError, httpx.TimeoutException)):
                    permanent = self._https_instead()  # connected, then closed or garbage
                if permanent is not None:
                    raise permanent from exc
                why = retry_reason(exc)
                continue
            if response.status_code in RETRY_STATUS:
                why = f"HTTP {response.status_code}"
                after = retry_after(response.headers.get("retry-after", ""))
                if after is not None:
                    delay = min(after, 30.0)
                continue
            if response.status_code in (401, 403):
                raise EngineUnavailable(
                    f"the embedding server at {self.url} {self._key_problem} (HTTP "
                    f"{response.status_code}): pass {self._key_advice} with --embed-api-key "
                    f"or GGUF_EMBED_EMBED_API_KEY", url=self.url)
            if response.has_redirect_location:
                moved = redirect_error(self.url, path, response)
                if not optional:
                    raise moved
                self.redirect = moved
                return None
            json_answer = _json_of(response)
            if response.status_code == 400 and json_answer is _NOT_JSON:
                https = self._https_instead()  # nginx and Go answer plain HTTP to TLS so
                if https is not None:
                    raise https
            if response.is_success and json_answer is not _NOT_JSON:
                return json_answer
            if optional:
                self.missed = (f"HTTP {response.status_code}" if not response.is_success
                               else "an answer that is not JSON")
                return None
            if response.is_success:
                raise EngineError(f"the server at {self.url} answered {path} with something "
                                  f"that is not JSON: {NOT_AN_API}")
            message = server_message(response)
            if response.status_code == 400:
                raise InputError(f"the embedding server at {self.url} refused the input: "
                                 f"{message}", param="input")
            hint = f"; {NOT_AN_API}" if response.status_code in (404, 405) else ""
            raise EngineUnavailable(f"the embedding server at {self.url} answered {path} with "
                                    f"HTTP {response.status_code}: {message}{hint}", url=self.url)
        raise EngineUnavailable(f"the embedding server at {self.url} cannot be reached "
                                f"({why}, {self.retries} tries): start it, or check "
                                f"--embed-url", url=self.url)

    def _silent(self, what: str, seconds: float, probe: bool) -> EngineUnavailable:
        """The error for a request that was taken and not answered in time (not retried)."""
        advice = ("check that --embed-url points at an embeddings server (not another "
                  "service on that port) and that it is up (not still starting, stopped or "
                  "stuck)" if probe else
                  "if it is busy or slow (a big batch on a CPU), give a longer --embed-timeout "
                  "or a smaller --embed-batch; else check that it is not stuck")
        return EngineUnavailable(f"the embedding server at {self.url} accepted the connection "
                                 f"but did not answer {what} within {seconds:g} s: "
                                 f"{advice}", url=self.url)

    def _https_instead(self) -> EngineUnavailable | None:
        """The error for an http:// URL whose port speaks HTTPS (asked once per client)."""
        if self._tls_asked or not self.url.startswith("http://") or self._transport:
            return None
        self._tls_asked = True
        return https_error(self.url) if answers_tls(self.url) else None


def retry_after(value: str) -> float | None:
    """The seconds a ``Retry-After`` header asks for: a number, or an HTTP date (0 once
    past); None when it says neither."""
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=timezone.utc)
    return max(0.0, (when - datetime.now(timezone.utc)).total_seconds())


_NOT_JSON = object()


def _json_of(response: Any) -> Any:
    try:
        return response.json()
    except ValueError:
        return _NOT_JSON
