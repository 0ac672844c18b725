"""The HTTP plumbing every route of :mod:`gguf_embed.server` shares: OpenAI's error envelope
(the one mapping from the library's exceptions, and 404/405 for unknown routes and methods),
reading a JSON body within its limit, the request log, CORS for named origins, and noticing a
client that went away.

The request log (logger ``gguf_embed.server``, at INFO: ``serve -v`` shows it on stderr) has
one line per request: method, path, status, the error code of a refused request (clients such
as Open WebUI show only "400 Bad Request"), inputs, tokens and milliseconds, never the text.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, TypeVar

from starlette.middleware.cors import CORSMiddleware
from starlette.requests import Request
from starlette.responses import JSONResponse as _JSONResponse
from starlette.responses import Response

from .errors import (
    GgufEmbedError,
    IndexDamaged,
    IndexFileError,
    InputError,
    InputTooLong,
    InvalidDimensions,
    ModelError,
)
from .http_guard import ASGIApp, Message, Receive, Scope, Send

log = logging.getLogger("gguf_embed.server")
T = TypeVar("T")
FORBIDDEN_ORIGIN = "forbidden_origin"  # the guard's code for the same refusal
GONE = 499  # the client closed the connection before the answer (nginx's code), for the log


class ApiError(Exception):
    def __init__(self, status: int, message: str, type_: str = "invalid_request_error",
                 param: str | None = None, code: str | None = None) -> None:
        super().__init__(message)
        self.status, self.message, self.type, self.param, self.code = (
            status, message, type_, param, code)


class ClientGone(Exception):
    """The client disconnected while its request was being served."""


def api_error(exc: BaseException) -> ApiError:
    """The one mapping from the library's exceptions to HTTP errors."""
    if isinstance(exc, ApiError):
        return exc
    if isinstance(exc, InputTooLong):
        return ApiError(400, f'{exc}: send "truncate": true in the request, or start the '
                             f"server with --truncate", param="input",
                        code="context_length_exceeded")
    if isinstance(exc, InvalidDimensions):
        return ApiError(400, str(exc), param="dimensions", code="invalid_dimensions")
    if isinstance(exc, InputError):
        return ApiError(400, str(exc), param=exc.param, code="invalid_input")
    if isinstance(exc, IndexDamaged):  # the server's own file: not the request's fault
        return ApiError(500, str(exc), type_="server_error", code="index_damaged")
    if isinstance(exc, IndexFileError):
        return ApiError(400, str(exc), param=None, code="index_error")
    if isinstance(exc, ModelError):
        return ApiError(404, str(exc), param="model", code="model_not_found")
    if isinstance(exc, GgufEmbedError):
        return ApiError(500, str(exc), type_="server_error", code="engine_error")
    return ApiError(500, "internal error", type_="server_error", code="internal_error")


class JSONResponse(_JSONResponse):
    """UTF-8 JSON, or ASCII-escaped where text holds bytes that are not UTF-8 (a file name),
    so that rendering a response can never fail."""

    def render(self, content: Any) -> bytes:
        try:
            return super().render(content)
        except UnicodeEncodeError:
            return json.dumps(content, ensure_ascii=True, allow_nan=False,
                              separators=(",", ":")).encode("ascii")


def envelope(message: str, type_: str, param: str | None, code: str | None) -> dict[str, Any]:
    return {"error": {"message": message, "type": type_, "param": param, "code": code}}


def error_response(err: ApiError, headers: dict[str, str] | None = None) -> Response:
    return JSONResponse(envelope(err.message, err.type, err.param, err.code),
                        status_code=err.status, headers=headers)


async def read_json(request: Request, max_body: int) -> dict[str, Any]:
    length = request.headers.get("content-length")
    if length and length.isdigit() and int(length) > max_body:
        raise ApiError(413, f"request body over {max_body} bytes", code="request_too_large")
    body = b""
    async for part in request.stream():
        body += part
        if len(body) > max_body:
            raise ApiError(413, f"request body over {max_body} bytes",
                           code="request_too_large")
    try:
        data = json.loads(body)
    except RecursionError as exc:
        raise ApiError(400, "the body is not usable JSON: nested too deeply",
                       code="invalid_json") from exc
    except ValueError as exc:  # bad JSON or UTF-8, an integer of over 4,300 digits
        raise ApiError(400, f"the body is not valid JSON: {exc}", code="invalid_json") from exc
    if not isinstance(data, dict):
        raise ApiError(400, "the body must be a JSON object", code="invalid_json")
    return data


def handler(func: Callable[[Request], Awaitable[Response]]
            ) -> Callable[[Request], Awaitable[Response]]:
    """A route answering every failure in the envelope (a traceback logged when unexpected)."""
    async def wrapped(request: Request) -> Response:
        try:
            return await func(request)
        except ClientGone:
            request.state.status = GONE
            return Response(status_code=GONE)  # nobody reads it
        except Exception as exc:
            if not isinstance(exc, (ApiError, GgufEmbedError)):
                log.error("unexpected error in %s %s", request.method, request.url.path,
                          exc_info=exc)
            return logged_error(request, api_error(exc))
    return wrapped


async def unless_gone(request: Request, work: Awaitable[T]) -> T:
    """``await work``, cancelled (its queued batches dropped) if the client disconnects
    first; then :class:`ClientGone` is raised.  Call once the body has been read."""
    task: asyncio.Future[T] = asyncio.ensure_future(work)
    watch: asyncio.Future[Any] = asyncio.ensure_future(_disconnect(request))
    try:
        await asyncio.wait([task, watch], return_when=asyncio.FIRST_COMPLETED)
    finally:
        watch.cancel()
    if not task.done():
        task.cancel()
        log.info("%s %s: client disconnected; its remaining work is dropped",
                 request.method, request.url.path)
        raise ClientGone()
    return task.result()


async def _disconnect(request: Request) -> None:
    while (await request.receive())["type"] != "http.disconnect":
        pass


def logged_error(request: Request, err: ApiError, headers: dict[str, str] | None = None
                 ) -> Response:
    """:func:`error_response`, its code kept for the request log."""
    request.state.error = err.code
    return error_response(err, headers)


# ------------------------------------------------------------------ 404 / 405 in the envelope
async def not_found(request: Request, exc: Exception) -> Response:
    return logged_error(request, ApiError(
        404, f"no route {request.url.path}; see /v1/models, /v1/embeddings, /v1/rerank, "
             f"/v2/rerank, /v1/search, /health", code="not_found"))


async def method_not_allowed(request: Request, exc: Exception) -> Response:
    allow = (getattr(exc, "headers", None) or {}).get("Allow", "")
    return logged_error(request, ApiError(
        405, f"{request.method} is not allowed on {request.url.path} (allowed: {allow})",
        code="method_not_allowed"), headers={"Allow": allow} if allow else None)


# ------------------------------------------------------------------ CORS, for named origins
class Cors(CORSMiddleware):
    """Starlette's CORS for the origins given (``--cors-origin``); a preflight from any other
    origin gets the guard's 403 envelope rather than a plain-text 400."""

    def __init__(self, app: ASGIApp, *, origins: Sequence[str]) -> None:
        super().__init__(app, allow_origins=list(origins), allow_methods=["GET", "POST"],
                         allow_headers=["authorization", "content-type"], max_age=600)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["method"] == "OPTIONS":
            headers = {k.decode("latin-1").lower(): v.decode("latin-1")
                       for k, v in scope.get("headers", [])}
            origin = headers.get("origin")
            if origin and "access-control-request-method" in headers \
                    and not self.is_allowed_origin(origin):  # a preflight refused
                scope.setdefault("state", {})["error"] = FORBIDDEN_ORIGIN
        await super().__call__(scope, receive, send)

    def preflight_response(self, request_headers: Any) -> Response:
        origin = request_headers["origin"]
        if not self.is_allowed_origin(origin):
            return error_response(ApiError(403, f"cross-origin requests from {origin} are not "
                                                f"allowed", type_="permission_error",
                                           code=FORBIDDEN_ORIGIN))
        return super().preflight_response(request_headers)


# ------------------------------------------------------------------ the request log
class RequestLog:
    """One INFO line per HTTP request; free when INFO is off (nothing measured)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not log.isEnabledFor(logging.INFO):
            await self.app(scope, receive, send)
            return
        start = time.perf_counter()
        state = scope.setdefault("state", {})
        status = 500

        async def sending(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, sending)
        finally:
            status = state.get("status", status)
            ms = (time.perf_counter() - start) * 1000
            extra = "".join(f" {key}={state[key]}" for key in ("error", "inputs", "tokens")
                            if state.get(key) is not None)
            log.info("%s %s %d%s %.1f ms", scope["method"], scope["path"], status, extra, ms)


__all__ = ["ApiError", "ClientGone", "Cors", "JSONResponse", "RequestLog", "api_error",
           "envelope", "error_response", "handler", "method_not_allowed", "not_found",
           "read_json", "unless_gone"]
