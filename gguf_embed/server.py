"""HTTP API over the library: OpenAI-compatible embeddings, plus search over an index.

    POST /v1/embeddings   OpenAI's request and response (float or base64, dimensions, usage)
    GET  /v1/models       the one model served
    GET  /health          liveness and what is loaded (with what a remote engine checks)
    POST /tokenize        llama-server's {"content"} → {"tokens"} (a list of texts: lists)
    POST /v1/search       {"query", "k", "mode", "path", "group", "rerank"} → the objects of
                          `search --json`
    POST /v1/rerank       Cohere/Jina/llama-server's {"query", "documents", "top_n"} →
                          {"results": [{"index", "relevance_score"}]} (with --reranker)

Queries get the model's instruction with ``"input_type": "query"`` (and optional ``"task"``) in
the request body; with the official client: ``extra_body={"input_type": "query"}``.

Errors use OpenAI's envelope ``{"error": {"message", "type", "param", "code"}}``: 400 for any
malformed request (never a 500), and an unexpected failure is logged with its traceback (logger
``gguf_embed.server``, on stderr by default) while the client gets the 500 envelope.  Security:
loopback by default; requests whose Host is not the bound address or whose Origin is not a
loopback origin are refused (DNS rebinding), and the API key, when set, is compared in constant
time, by the middleware of http_guard.py; body size and input count are limited.  One
:class:`~gguf_embed.service.EmbeddingService` holds the engine, the batcher, the reranker and
the read-only index for the server's lifetime.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import logging
import socket
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ._text import unicode_problem
from .errors import (
    GgufEmbedError,
    IndexFileError,
    InputError,
    InputTooLong,
    InvalidDimensions,
    ModelError,
)
from .http_guard import HostGuard
from .protocol import EmbeddingEngine
from .remote_engine import remote_facts
from .service import EmbeddingService

MAX_INPUTS = 2048
MAX_BODY = 16 * 1024 * 1024
log = logging.getLogger("gguf_embed.server")


class ApiError(Exception):
    def __init__(self, status: int, message: str, type_: str = "invalid_request_error",
                 param: str | None = None, code: str | None = None) -> None:
        super().__init__(message)
        self.status, self.message, self.type, self.param, self.code = (
            status, message, type_, param, code)


def api_error(exc: BaseException) -> ApiError:
    """The one mapping from the library's exceptions to HTTP errors."""
    if isinstance(exc, ApiError):
        return exc
    if isinstance(exc, InputTooLong):
        return ApiError(400, str(exc), param="input", code="context_length_exceeded")
    if isinstance(exc, InvalidDimensions):
        return ApiError(400, str(exc), param="dimensions", code="invalid_dimensions")
    if isinstance(exc, InputError):
        return ApiError(400, str(exc), param=exc.param, code="invalid_input")
    if isinstance(exc, IndexFileError):
        return ApiError(400, str(exc), param=None, code="index_error")
    if isinstance(exc, ModelError):
        return ApiError(404, str(exc), param="model", code="model_not_found")
    if isinstance(exc, GgufEmbedError):
        return ApiError(500, str(exc), type_="server_error", code="engine_error")
    return ApiError(500, "internal error", type_="server_error", code="internal_error")


@dataclass
class ServerConfig:
    model_name: str
    host: str = "127.0.0.1"
    port: int = 8000
    api_key: str | None = None
    index_path: str | None = None
    max_inputs: int = MAX_INPUTS
    max_body: int = MAX_BODY
    batch_window: float = 0.004  # seconds; 0 turns cross-request batching off
    reranker_name: str | None = None


def create_app(engine: EmbeddingEngine, config: ServerConfig, reranker: Any | None = None) -> Any:
    from starlette.applications import Starlette
    from starlette.requests import Request
    from starlette.responses import JSONResponse as _JSONResponse
    from starlette.responses import Response

    class JSONResponse(_JSONResponse):
        """UTF-8 JSON, or ASCII-escaped where text holds bytes that are not UTF-8 (a file
        name), so that rendering a response can never fail."""

        def render(self, content: Any) -> bytes:
            try:
                return super().render(content)
            except UnicodeEncodeError:
                return json.dumps(content, ensure_ascii=True, allow_nan=False,
                                  separators=(",", ":")).encode("ascii")
    from starlette.middleware import Middleware
    from starlette.routing import Route

    service = EmbeddingService(engine, index_path=config.index_path, reranker=reranker,
                               batch_window=config.batch_window)
    names = {config.model_name, engine.spec.name, engine.path.name, engine.path.stem}
    index_name = Path(config.index_path).name if config.index_path else None  # no full paths
    created = int(time.time())

    def error_response(err: ApiError) -> Response:
        return JSONResponse({"error": {"message": err.message, "type": err.type,
                                       "param": err.param, "code": err.code}},
                            status_code=err.status)

    async def read_json(request: Request) -> dict[str, Any]:
        length = request.headers.get("content-length")
        if length and length.isdigit() and int(length) > config.max_body:
            raise ApiError(413, f"request body over {config.max_body} bytes",
                           code="request_too_large")
        body = b""
        async for part in request.stream():
            body += part
            if len(body) > config.max_body:
                raise ApiError(413, f"request body over {config.max_body} bytes",
                               code="request_too_large")
        try:
            data = json.loads(body)
        except RecursionError as exc:
            raise ApiError(400, "the body is not usable JSON: nested too deeply",
                           code="invalid_json") from exc
        except ValueError as exc:  # bad JSON or UTF-8, an integer of over 4,300 digits
            raise ApiError(400, f"the body is not valid JSON: {exc}", code="invalid_json") \
                from exc
        if not isinstance(data, dict):
            raise ApiError(400, "the body must be a JSON object", code="invalid_json")
        return data

    def handler(func: Any) -> Any:
        async def wrapped(request: Request) -> Response:
            try:
                return await func(request)
            except Exception as exc:
                if not isinstance(exc, (ApiError, GgufEmbedError)):
                    log.error("unexpected error in %s %s", request.method, request.url.path,
                              exc_info=exc)
                return error_response(api_error(exc))
        return wrapped

    async def embeddings(request: Request) -> Response:
        data = await read_json(request)
        model = data.get("model")
        if model is not None and not isinstance(model, str):
            raise ApiError(400, "model must be a string", param="model")
        if model is not None and model not in names:
            raise ApiError(404, f"model {model!r} is not served here; this server has "
                                f"{config.model_name!r}", param="model", code="model_not_found")
        fmt = data.get("encoding_format", "float")
        if fmt not in ("float", "base64"):
            raise ApiError(400, "encoding_format must be 'float' or 'base64'",
                           param="encoding_format")
        dims = data.get("dimensions")
        if dims is not None and (isinstance(dims, bool) or not isinstance(dims, int)):
            raise ApiError(400, "dimensions must be an integer", param="dimensions")
        engine.check_dimensions(dims)
        input_type = data.get("input_type", "document")
        if input_type not in ("query", "document"):
            raise ApiError(400, "input_type must be 'query' or 'document'", param="input_type")
        task = data.get("task")
        if task is not None and not isinstance(task, str):
            raise ApiError(400, "task must be a string", param="task")
        sequences = _sequences(engine, data.get("input"), input_type == "query", task,
                               config.max_inputs)
        vectors = await service.embed(sequences, dims, urgent=input_type == "query")
        used = sum(len(s) for s in sequences)
        items = []
        for i, vector in enumerate(vectors):
            embedding: Any = (base64.b64encode(np.asarray(vector, dtype="<f4").tobytes())
                              .decode("ascii") if fmt == "base64" else vector.tolist())
            items.append({"object": "embedding", "index": i, "embedding": embedding})
        return JSONResponse({"object": "list", "data": items, "model": config.model_name,
                             "usage": {"prompt_tokens": used, "total_tokens": used}})

    async def models(request: Request) -> Response:
        return JSONResponse({"object": "list", "data": [
            {"id": config.model_name, "object": "model", "created": created,
             "owned_by": "gguf-embed"}]})

    async def health(request: Request) -> Response:
        return JSONResponse({"status": "ok", "model": config.model_name, "dims": engine.dims,
                             "context": engine.max_tokens,
                             "index": index_name,
                             "loaded": getattr(engine, "loaded", True),
                             **remote_facts(engine)})

    async def tokenize(request: Request) -> Response:
        """llama-server's ``{"content": text}`` → ``{"tokens": [...]}``; a list of texts gives
        a list of lists.  The tokens the engine embeds (specials and EOS included), no prompt:
        a remote engine counts chunk sizes with it (remote_engine.py)."""
        data = await read_json(request)
        content = data.get("content")
        texts = [content] if isinstance(content, str) else content
        if not isinstance(texts, list) or not all(isinstance(t, str) for t in texts) \
                or len(texts) > config.max_inputs:
            raise ApiError(400, f"content must be a string or an array of at most "
                                f"{config.max_inputs} strings", param="content")
        for i, text in enumerate(texts):
            if problem := unicode_problem(text):
                raise ApiError(400, f"content[{i}] is not valid UTF-8 text ({problem})",
                               param="content")
        tokens = await asyncio.to_thread(lambda: [engine.tokenize(t).tolist() for t in texts])
        return JSONResponse({"tokens": tokens[0] if isinstance(content, str) else tokens})

    async def search(request: Request) -> Response:
        if not config.index_path:
            raise ApiError(404, "no index is served; start the server with --db FILE",
                           code="no_index")
        data = await read_json(request)
        query = data.get("query")
        if not isinstance(query, str) or not query.strip():
            raise ApiError(400, "query must be a non-empty string", param="query")
        k = data.get("k", 10)
        if isinstance(k, bool) or not isinstance(k, int) or not 1 <= k <= 1000:
            raise ApiError(400, "k must be an integer from 1 to 1000", param="k")
        mode = data.get("mode", "hybrid")
        if not isinstance(mode, str):
            raise ApiError(400, "mode must be a string", param="mode")
        group = data.get("group", "file")
        if group not in ("file", "chunk"):
            raise ApiError(400, 'group must be "file" (one result per file, the default) or '
                           '"chunk"', param="group")
        path = data.get("path")
        if path is not None and not isinstance(path, str):
            raise ApiError(400, "path must be a string", param="path")

        use_reranker = data.get("rerank", reranker is not None)
        if not isinstance(use_reranker, bool):
            raise ApiError(400, "rerank must be true or false", param="rerank")
        if use_reranker and reranker is None:
            raise ApiError(400, "no reranker is served; start the server with --reranker "
                                "MODEL", param="rerank", code="no_reranker")

        results = await service.search(query, k=k, mode=mode, path=path, group=group,
                                       rerank=use_reranker)
        return JSONResponse({"object": "list", "data": results})

    async def rerank(request: Request) -> Response:
        if reranker is None:
            raise ApiError(404, "no reranker is served; start the server with --reranker "
                                "MODEL", code="no_reranker")
        data = await read_json(request)
        name = config.reranker_name or reranker.spec.name
        model = data.get("model")
        if model is not None and model not in {name, reranker.spec.name, reranker.path.name,
                                               reranker.path.stem}:
            raise ApiError(404, f"reranker {model!r} is not served here; this server has "
                                f"{name!r}", param="model", code="model_not_found")
        query = data.get("query")
        if not isinstance(query, str) or not query.strip():
            raise ApiError(400, "query must be a non-empty string", param="query")
        texts = _documents(data.get("documents"), config.max_inputs)
        top_n = data.get("top_n", len(texts))
        if isinstance(top_n, bool) or not isinstance(top_n, int) or top_n < 1:
            raise ApiError(400, "top_n must be a positive integer", param="top_n")
        result = await asyncio.to_thread(reranker.score, query, texts)
        cut = set(result.truncated)
        order = sorted(range(len(texts)), key=lambda i: (-float(result.scores[i]), i))
        items = []
        for i in order[:top_n]:
            item: dict[str, Any] = {"index": i, "relevance_score": float(result.scores[i])}
            if data.get("return_documents"):
                item["document"] = {"text": texts[i]}
            if i in cut:  # cut to the context: said, never silent
                item["truncated"] = True
            items.append(item)
        used = sum(result.token_counts)
        return JSONResponse({"object": "list", "model": name, "results": items,
                             "usage": {"prompt_tokens": used, "total_tokens": used}})

    routes = [
        Route("/v1/rerank", handler(rerank), methods=["POST"]),  # llama-server's four names
        Route("/rerank", handler(rerank), methods=["POST"]),
        Route("/v1/reranking", handler(rerank), methods=["POST"]),
        Route("/reranking", handler(rerank), methods=["POST"]),
        Route("/v1/embeddings", handler(embeddings), methods=["POST"]),
        Route("/embeddings", handler(embeddings), methods=["POST"]),
        Route("/v1/models", handler(models), methods=["GET"]),
        Route("/health", handler(health), methods=["GET"]),
        Route("/v1/search", handler(search), methods=["POST"]),
        Route("/tokenize", handler(tokenize), methods=["POST"]),
    ]
    @contextlib.asynccontextmanager
    async def lifespan(app: Any) -> AsyncIterator[None]:
        yield
        service.close()

    app = Starlette(routes=routes, lifespan=lifespan,
                    middleware=[Middleware(HostGuard, host=config.host, port=lambda: config.port,
                                           api_key=config.api_key)])
    app.state.service = service
    app.state.batcher = service.batcher
    return app


def _documents(raw: Any, max_inputs: int) -> list[str]:
    """Rerank documents: strings, or objects with a "text" (Cohere's older shape)."""
    if not isinstance(raw, list) or not raw:
        raise ApiError(400, "documents must be a non-empty array of strings", param="documents")
    if len(raw) > max_inputs:
        raise ApiError(400, f"too many documents: {len(raw)} > {max_inputs}", param="documents")
    texts = []
    for i, item in enumerate(raw):
        text = item.get("text") if isinstance(item, dict) else item
        if not isinstance(text, str):
            raise ApiError(400, f"documents[{i}] must be a string", param="documents")
        texts.append(text)
    return texts


def _sequences(engine: EmbeddingEngine, raw: Any, query: bool, task: str | None,
               max_inputs: int) -> list[np.ndarray]:
    """OpenAI's four input shapes → token sequences, every one checked before any decode."""
    if isinstance(raw, str):
        raw = [raw]
    if not isinstance(raw, list) or not raw:
        raise ApiError(400, "input must be a non-empty string or array", param="input")
    if all(isinstance(x, int) and not isinstance(x, bool) for x in raw):
        raw = [raw]  # one array of token ids
    if len(raw) > max_inputs:
        raise ApiError(400, f"too many inputs: {len(raw)} > {max_inputs}", param="input")
    items: list[str | list[int]] = []
    if task is not None and (problem := unicode_problem(task)):
        raise ApiError(400, f"task is not valid UTF-8 text ({problem})", param="task")
    for i, item in enumerate(raw):
        if isinstance(item, str):
            if not item:
                raise ApiError(400, f"input[{i}] is empty", param="input")
            if problem := unicode_problem(item):
                raise ApiError(400, f"input[{i}] is not valid UTF-8 text ({problem})",
                               param="input")
        elif isinstance(item, list) and item and all(
                isinstance(t, int) and not isinstance(t, bool) for t in item):
            pass  # ids: the engine checks their range before numpy meets them
        else:
            raise ApiError(400, f"input[{i}] must be a non-empty string or array of token "
                                f"ids", param="input")
        items.append(item)
    # prompt, EOS and the engine's own checks (ids, context), here, before this joins a batch
    return engine.prepare(items, query=query, task=task).sequences


def bind(host: str, port: int) -> socket.socket:
    """The listening socket, bound before anything is announced (``OSError`` if the port is
    taken); with port 0 the system picks one: read it from ``getsockname()``."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host.strip("[]"), port))
    except OSError:
        sock.close()
        raise
    sock.set_inheritable(True)
    return sock


def serve(engine: EmbeddingEngine, config: ServerConfig, *, log_level: str = "warning",
          sock: socket.socket | None = None, reranker: Any | None = None) -> None:
    """Run the server until interrupted (blocking), on ``sock`` if given (see :func:`bind`)."""
    import uvicorn

    if sock is None:
        sock = bind(config.host, config.port)
    config.port = sock.getsockname()[1]  # the Host check wants the real port (with port 0)
    app = create_app(engine, config, reranker)
    server = uvicorn.Server(uvicorn.Config(app, log_level=log_level,
                                           timeout_graceful_shutdown=5))
    server.run(sockets=[sock])
