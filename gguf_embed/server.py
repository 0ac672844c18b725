"""HTTP API over the library: OpenAI-compatible embeddings, plus search over an index.

    POST /v1/embeddings   OpenAI's request and response (float or base64, dimensions, usage),
                          plus "input_type", "task" and "truncate"
    GET  /v1/models       the names served (embedding model, then reranker)
    GET  /health          liveness and what is loaded (with what a remote engine checks)
    POST /tokenize        llama-server's {"content"} → {"tokens"} (a list of texts: lists)
    POST /v1/search       {"query", "k", "mode", "path", "group", "rerank"} → the objects of
                          `search --json`
    POST /v1/rerank, /v2/rerank (and llama-server's aliases): server_rerank.py

Any ``model`` name is answered by the one model served (the response's ``model`` says which),
as llama-server does; ``strict_model_names`` restores 404 for names not served.  Token-id
inputs are refused unless ``token_ids="model"`` (OpenAI clients send cl100k ids).  Large
requests are embedded in pieces, and small requests that come meanwhile go to the engine's
side lane beside them, or between the pieces where there is none (batcher.py); a client
that disconnects has its remaining pieces dropped.

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
import signal
import socket
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ._text import unicode_problem
from .http_guard import HostGuard
from .protocol import EmbeddingEngine, Prepared
from .remote_engine import remote_facts
from .server_http import (
    ApiError,
    Cors,
    JSONResponse,
    RequestLog,
    api_error,
    handler,
    method_not_allowed,
    not_found,
    read_json,
    unless_gone,
)
from .server_rerank import rerank_routes
from .service import EmbeddingService
from .token_ids import cl100k, decode_cl100k

__all__ = ["MAX_BODY", "MAX_INPUTS", "ApiError", "ServerConfig", "api_error", "bind",
           "create_app", "serve"]

MAX_INPUTS = 2048
MAX_BODY = 16 * 1024 * 1024
TOKEN_IDS = ("refuse", "model", "cl100k")  # what token-id inputs are taken as (--token-ids)
OFF_LOOP = 64  # inputs above which a request is tokenized and rendered in a worker thread


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
    served_names: tuple[str, ...] = ()  # more names for the embedding model (listed)
    reranker_served_names: tuple[str, ...] = ()
    strict_model_names: bool = False  # unknown model names get 404 (else: answered anyway)
    token_ids: str = "refuse"  # "model": the served model's own ids; "cl100k": OpenAI's
    truncate: bool = False  # the default of a request's "truncate"
    cors_origins: tuple[str, ...] = ()


def create_app(engine: EmbeddingEngine, config: ServerConfig, reranker: Any | None = None) -> Any:
    from starlette.applications import Starlette
    from starlette.middleware import Middleware
    from starlette.requests import Request
    from starlette.responses import Response
    from starlette.routing import Route

    if config.token_ids not in TOKEN_IDS:
        raise ValueError(f"token_ids must be one of {TOKEN_IDS}")
    if config.token_ids == "cl100k":
        cl100k()  # loaded now: a missing package fails at start, not per request
    service = EmbeddingService(engine, index_path=config.index_path, reranker=reranker,
                               batch_window=config.batch_window)
    listed = list(dict.fromkeys([config.model_name, *config.served_names]))
    names = {*listed, engine.spec.name, engine.path.name, engine.path.stem}
    rerank_name = config.reranker_name or (reranker.spec.name if reranker is not None else None)
    rerank_listed = list(dict.fromkeys([rerank_name, *config.reranker_served_names])) \
        if reranker is not None else []
    rerank_names = {*rerank_listed, reranker.spec.name, reranker.path.name,
                    reranker.path.stem} if reranker is not None else set()
    index_name = Path(config.index_path).name if config.index_path else None  # no full paths
    created = int(time.time())

    def model_check(served: set[str], shown: str | None, what: str) -> Any:
        def check(model: Any) -> None:
            if model is not None and not isinstance(model, str):
                raise ApiError(400, "model must be a string", param="model")
            if config.strict_model_names and model is not None and model not in served:
                raise ApiError(404, f"{what} {model!r} is not served here; this server has "
                                    f"{shown!r} (without --strict-model-names any name is "
                                    f"answered)", param="model", code="model_not_found")
        return check

    check_model = model_check(names, config.model_name, "model")

    async def embeddings(request: Request) -> Response:
        data = await read_json(request, config.max_body)
        check_model(data.get("model"))
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
        truncate = data.get("truncate", config.truncate)
        if not isinstance(truncate, bool):
            raise ApiError(400, "truncate must be true or false", param="truncate")
        raw = data.get("input")
        big = isinstance(raw, list) and len(raw) > OFF_LOOP

        def prepare() -> Prepared:
            return _prepare(engine, raw, input_type == "query", task, config.max_inputs,
                            truncate=truncate, token_ids=config.token_ids)

        # a large request is tokenized and rendered off the event loop: others go on meanwhile
        prepared = await asyncio.to_thread(prepare) if big else prepare()
        used = prepared.total_tokens
        request.state.inputs, request.state.tokens = len(prepared), used
        vectors = await unless_gone(request, service.embed(
            prepared.sequences, dims, urgent=input_type == "query"))
        def render() -> Response:
            cut = set(prepared.truncated)
            items = []
            for i, vector in enumerate(vectors):
                embedding: Any = (base64.b64encode(np.asarray(vector, dtype="<f4").tobytes())
                                  .decode("ascii") if fmt == "base64" else vector.tolist())
                item = {"object": "embedding", "index": i, "embedding": embedding}
                if i in cut:  # cut to the context, as asked: said, never silent
                    item["truncated"] = True
                items.append(item)
            return JSONResponse({"object": "list", "data": items, "model": config.model_name,
                                 "usage": {"prompt_tokens": used, "total_tokens": used}})

        return await asyncio.to_thread(render) if big else render()

    async def models(request: Request) -> Response:
        return JSONResponse({"object": "list", "data": [
            {"id": name, "object": "model", "created": created, "owned_by": "gguf-embed"}
            for name in [*listed, *rerank_listed]]})

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
        data = await read_json(request, config.max_body)
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
        data = await read_json(request, config.max_body)
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

    routes = [
        *rerank_routes(reranker, rerank_name, model_check(rerank_names, rerank_name,
                                                          "reranker"),
                       config.max_inputs, config.max_body),
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

    middleware = [Middleware(RequestLog)]
    if config.cors_origins:  # before the guard: a preflight carries no API key
        middleware.append(Middleware(Cors, origins=config.cors_origins))
    middleware.append(Middleware(HostGuard, host=config.host, port=lambda: config.port,
                                 api_key=config.api_key, origins=config.cors_origins))
    app = Starlette(routes=routes, lifespan=lifespan, middleware=middleware,
                    exception_handlers={404: not_found, 405: method_not_allowed})
    app.state.service = service
    app.state.batcher = service.batcher
    return app


def _prepare(engine: EmbeddingEngine, raw: Any, query: bool, task: str | None,
             max_inputs: int, *, truncate: bool = False, token_ids: str = "refuse") -> Prepared:
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
            if token_ids == "refuse":
                raise ApiError(400, TOKEN_IDS_REFUSED.format(i=i), param="input",
                               code="token_ids_not_accepted")
            if token_ids == "cl100k":  # OpenAI's ids: back to the text they were made from
                item = decode_cl100k(item, i)
            # else the model's ids: the engine checks their range before numpy meets them
        else:
            raise ApiError(400, f"input[{i}] must be a non-empty string or array of token "
                                f"ids", param="input")
        items.append(item)
    # prompt, EOS and the engine's own checks (ids, context), here, before this joins a batch
    return engine.prepare(items, query=query, task=task, truncate=truncate)


TOKEN_IDS_REFUSED = (
    "input[{i}] is an array of token ids, which this server does not take by default: OpenAI "
    "clients send ids of OpenAI's own cl100k vocabulary, and this model would read them as "
    "its own and return wrong vectors. Send text instead (LangChain: "
    "OpenAIEmbeddings(..., check_embedding_ctx_length=False)), or start the server with "
    "--token-ids cl100k (OpenAI's ids, decoded exactly) or --token-ids model (this model's "
    "own ids)")


LISTEN_BACKLOG = 2048  # uvicorn's default


def bind(host: str, port: int) -> socket.socket:
    """The socket, bound and listening before anything is announced (``OSError`` if the port
    is taken): a client that reads the announced address may connect at once, and waits in
    the backlog until the server takes it.  With port 0 the system picks one: read it from
    ``getsockname()``."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host.strip("[]"), port))
        sock.listen(LISTEN_BACKLOG)
    except OSError:
        sock.close()
        raise
    sock.set_inheritable(True)
    return sock


def serve(engine: EmbeddingEngine, config: ServerConfig, *, log_level: str = "warning",
          sock: socket.socket | None = None, reranker: Any | None = None,
          ready: Callable[[], None] | None = None) -> None:
    """Run the server until interrupted (blocking), on ``sock`` if given (see :func:`bind`);
    ``ready``: see :func:`run_app`."""
    if sock is None:
        sock = bind(config.host, config.port)
    config.port = sock.getsockname()[1]  # the Host check wants the real port (with port 0)
    run_app(create_app(engine, config, reranker), sock, log_level=log_level, ready=ready)


def run_app(app: Any, sock: socket.socket, *, log_level: str = "warning",
            ready: Callable[[], None] | None = None) -> None:
    """Serve the ASGI ``app`` on ``sock`` with uvicorn until interrupted (blocking).
    ``ready`` is called once the server has started, with uvicorn's signal handlers in place:
    a Ctrl-C from then on is a graceful shutdown followed by ``KeyboardInterrupt``, never a
    half-started event loop (so the CLI announces the server there, not before)."""
    import uvicorn

    class Server(uvicorn.Server):
        @contextlib.contextmanager
        def capture_signals(self) -> Iterator[None]:
            """uvicorn's handlers, but a signal the process was started with ignored (SIGINT
            in a background job, SIGTERM under a supervisor that stops it otherwise) stays
            ignored: uvicorn took it over and stopped the server, exit 0."""
            main = threading.current_thread() is threading.main_thread()
            ignored = [sig for sig in (signal.SIGINT, signal.SIGTERM)
                       if main and signal.getsignal(sig) is signal.SIG_IGN]
            with super().capture_signals():
                for sig in ignored:
                    signal.signal(sig, signal.SIG_IGN)
                yield

        async def startup(self, sockets: list[socket.socket] | None = None) -> None:
            await super().startup(sockets=sockets)
            if self.started and ready is not None:
                ready()

    Server(uvicorn.Config(app, log_level=log_level, timeout_graceful_shutdown=5)
           ).run(sockets=[sock])
