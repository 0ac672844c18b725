"""An MCP server over one index (the official MCP Python SDK): search, get and status tools.

The model is loaded once and stays warm; tools run in worker threads (the engine serializes
its decodes).  Errors a caller can fix come back as MCP tool errors (``isError``) with a
one-line message; no call ends the server.  With ``watch`` paths, a background thread keeps
the index live (see :mod:`gguf_embed.watch`).

(Named ``mcp_server`` rather than ``mcp`` so that nothing can mistake it for the SDK's
top-level ``mcp`` package.)
"""

from __future__ import annotations

import socket
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any

from mcp.server.mcpserver import MCPServer
from mcp.server.mcpserver.exceptions import ToolError
from mcp_types import ToolAnnotations
from pydantic import Field, ValidationError

from . import mcp_paths
from .errors import GgufEmbedError, InputError, capped, first_line, quoted
from .extract import DEFAULT_MAX_BYTES, Skip, extract, too_large
from .index import Index
from .safe_open import Credentials, NotRegular, Outside, Read, TooLarge, read_inside
from .search import MODES, SearchResult
from .walk import Bounds, secret_path
from .watch import Background

MAX_GET_LINES = 2_000  # lines returned by one get() without a range (the rest: ask again)
MAX_GET_CHARS = 200_000

INSTRUCTIONS = """\
Local semantic search over the user's own files (a gguf-embed index). Use `search` to find
which files talk about something, by meaning or by exact words; then `get` to read the lines
that matter. `status` says what is indexed and whether the index is being kept live."""

SEARCH_DOC = """\
Search the user's indexed files and return the best-matching FILES, best first.

Use this first whenever you need to find where something is described, explained or
implemented in the user's files: questions in plain language ("how are logs rotated?") work
with the default mode; for an exact identifier or phrase use mode="keyword".

Returns {"results": [...]}, one entry per file: path (absolute), score (higher is better;
only comparable within one call), start_line and end_line of the best-matching passage,
page (PDFs only), a short snippet of that passage, and rerank_score when the server's reranker
rescored it. Read a passage with `get(path, start_line, end_line)`."""

GET_DOC = """\
Read the text of a file that is in the index: the whole file, or the lines from start_line to
end_line (1-based, inclusive), e.g. a passage that `search` returned.

Only paths from the index can be read (use the path exactly as `search` gave it); any other
file is refused. Returns {"path", "start_line", "end_line", "total_lines", "text"}; a long
file is returned in parts of at most 2,000 lines, with "truncated": true and
"next_start_line" to ask for the rest. For PDFs, lines count within a page: pass the page
that `search` returned (default 1; the answer's "pages" says how many there are)."""

STATUS_DOC = """\
What the index holds and how it is kept: the model, number of files and passages, size, when
it was last updated, and, if the server watches folders, which ones and the last change it
applied. Use it to check that the files you expect are indexed, or if search finds nothing."""


class _Server(MCPServer):
    """Argument errors on one line (pydantic's own message spans several)."""

    async def call_tool(self, name: str, arguments: dict[str, Any],
                        context: Any = None) -> Any:
        try:
            return await super().call_tool(name, arguments, context)
        except ToolError as exc:
            cause = exc.__cause__
            if isinstance(cause, ValidationError):
                raise ToolError(f"Error executing tool {name}: {_one_line(cause)}") from cause
            raise


def _one_line(exc: ValidationError) -> str:
    parts = []
    for err in exc.errors():
        field = ".".join(str(p) for p in err["loc"]) or "arguments"
        parts.append(f"{field}: {err['msg']}")
    return "; ".join(parts)


class Service:
    """The warm state behind the tools: the engine, the index file, an optional watcher."""

    def __init__(self, engine: Any, db: str | Path, *, model_name: str | None = None,
                 reranker: Any | None = None, watcher: Background | None = None) -> None:
        self.engine = engine
        self.db = Path(db)
        self.model_name = model_name or (engine.spec.name if engine is not None else None)
        self.reranker = reranker
        self.watcher = watcher

    def _open(self) -> Index:
        return Index(self.db, self.engine, readonly=True, model_ref=self.model_name)

    # ------------------------------------------------------------------ tools
    def search(self, query: str, k: int = 10, mode: str = "hybrid", path: str | None = None,
               rerank: bool | None = None) -> dict[str, Any]:
        use = self.reranker is not None if rerank is None else rerank
        if use and self.reranker is None:
            raise InputError("no reranker is loaded: start the server with --reranker MODEL",
                             param="rerank")
        with self._open() as index:
            where = mcp_paths.search_filter(index, path)  # relative: as get reads it
            hits = index.search(query, k=k, mode=mode, path=where, group="file",
                                rerank=self.reranker if use else None)
        return {"results": [_hit(h) for h in hits]}

    def get(self, path: str, start_line: int | None = None, end_line: int | None = None,
            page: int | None = None) -> dict[str, Any]:
        with self._open() as index:
            shown = self._resolve(index, path)
            bounds = index.bounds()
        read = _read(path, shown, bounds)
        doc = extract(Path(read.real), read.data)  # the real name's suffix says the format
        if isinstance(doc, Skip):
            raise InputError(f"cannot read {shown}: {doc.reason}", param="path")
        if doc.pages is not None and page is None:
            if start_line is not None:
                raise InputError(f"{shown} is a PDF: pass the page the lines are on",
                                 param="page")
            page = 1  # lines count within a page; the answer says how many pages there are
        pages: list[int | None] = list(doc.pages) if doc.pages is not None \
            else [None] * len(doc.lines)
        rows = [(line, text) for line, text, pg in zip(
            doc.lines, doc.lines_text, pages, strict=True) if page is None or pg == page]
        if len(rows) > 1 and rows[-1][1] == "":
            rows.pop()  # the end of the last line, not a line of its own
        if not rows:
            raise InputError(f"{shown} has no page {page}", param="page")
        total = rows[-1][0]
        first = start_line or 1
        if first < 1 or (end_line is not None and end_line < first):
            raise InputError(f"bad line range {first}-{end_line}: start_line must be at least "
                             f"1 and end_line at least start_line", param="start_line")
        last = min(end_line or total, total)
        if first > total:
            raise InputError(f"{shown} has {total} lines; start_line {first} is past the end",
                             param="start_line")
        picked = [(n, t) for n, t in rows if first <= n <= last]
        out: list[str] = []
        size = 0
        truncated = False
        last_sent = first
        for n, text in picked:
            if len(out) >= MAX_GET_LINES or size + len(text) > MAX_GET_CHARS:
                truncated = True
                break
            out.append(text)
            size += len(text) + 1
            last_sent = n
        result: dict[str, Any] = {"path": shown, "start_line": first,
                                  "end_line": last_sent if out else first,
                                  "total_lines": total, "text": "\n".join(out)}
        if doc.pages is not None:
            result.update(page=page, pages=max(doc.pages))
        if truncated:
            result.update(truncated=True, next_start_line=last_sent + 1)
        return result

    def _resolve(self, index: Index, path: str) -> str:
        """The indexed document named by ``path`` (as the index lists it; see
        :mod:`gguf_embed.mcp_paths`); anything else is refused.  Whether it may be read is
        decided as it is read (:func:`_read`)."""
        known = mcp_paths.document(index, path)
        if secret_path(known):
            raise _credentials(path)
        return known

    def status(self) -> dict[str, Any]:
        state: dict[str, Any] = {"model": self.model_name, "reranker": (
            self.reranker.spec.name if self.reranker is not None else None),
            "model_loaded": getattr(self.engine, "loaded", True)}
        try:
            with Index(self.db, readonly=True) as index:
                state["index"] = index.status()
                state["index"]["roots"] = index.roots
        except GgufEmbedError as exc:
            state["index"] = {"path": str(self.db), "error": str(exc)}
        state["watch"] = self.watcher.state() if self.watcher else None
        return state


def _read(path: str, known: str, bounds: Bounds) -> Read:
    """The bytes of the indexed file ``known`` (named ``path`` by the caller), read from the
    very file whose real path was checked against ``bounds`` (the rule search results are
    filtered by) and the credential rule: a folder or the file swapped for a symlink meanwhile
    is seen, never followed blindly (see :mod:`gguf_embed.safe_open`)."""
    try:
        return read_inside(known, bounds, max_bytes=DEFAULT_MAX_BYTES)
    except Outside:
        raise _outside(path) from None
    except Credentials:
        # The roots and documents are whatever the index file says; this rule is not, so
        # a forged index cannot make get read a key or a .env from disk.
        raise _credentials(path) from None
    except NotRegular:
        raise InputError(f"cannot read {known}: not a regular file", param="path") from None
    except TooLarge as exc:
        raise InputError(f"cannot read {known}: {too_large(exc.size, exc.limit).reason}",
                         param="path") from None
    except OSError as exc:
        if not bounds.allows(known):  # which line to give, not whether to read
            raise _outside(path) from None
        why = "permission denied" if isinstance(exc, PermissionError) else (
            exc.strerror or str(exc))
        raise InputError(f"cannot read {known}: unreadable: {why}", param="path") from None


def _outside(path: str) -> InputError:
    return InputError(f"{quoted(path)} leads outside the indexed folders (a symlink); "
                      f"refused", param="path")


def _credentials(path: str) -> InputError:
    return InputError(f"{quoted(path)} holds credentials by convention; get never reads "
                      f"such a file from disk (search shows what was indexed of it)",
                      param="path")


def _hit(hit: SearchResult) -> dict[str, Any]:
    """One file's row: its best passage's lines (and page), the file's score, a snippet."""
    row: dict[str, Any] = {"path": hit.path, "score": hit.score, "start_line": hit.start_line,
                           "end_line": hit.end_line, "page": hit.start_page,
                           "snippet": hit.snippet}
    if hit.rerank_score is not None:
        row["rerank_score"] = hit.rerank_score
    return row


def create_server(service: Service) -> MCPServer:
    server = _Server("gguf-embed", instructions=INSTRUCTIONS, log_level="WARNING")
    read_only = ToolAnnotations(read_only_hint=True, idempotent_hint=True,
                                open_world_hint=False)

    def fail(exc: GgufEmbedError) -> ToolError:
        return ToolError(capped(first_line(exc, empty=type(exc).__name__)))

    @server.tool(description=SEARCH_DOC, annotations=read_only)
    def search(
        query: Annotated[str, Field(description="What to look for: a question, a description "
                                                "or exact words.")],
        k: Annotated[int, Field(ge=1, le=50, description="How many files to return.")] = 10,
        mode: Annotated[str, Field(description="hybrid (default: meaning and words), vector "
                                               "(meaning only) or keyword (exact words)",
                                   json_schema_extra={"enum": list(MODES)})] = "hybrid",
        path: Annotated[str | None, Field(description="Only files under this folder or "
                                                      "matching this glob, e.g. '*.md' or "
                                                      "'docs/**/*.md'; absolute, or "
                                                      "relative to an indexed folder.")
                        ] = None,
        rerank: Annotated[bool | None, Field(description="Rescore the top passages with the "
                                                         "reranker model, if the server has "
                                                         "one.")] = None,
    ) -> dict[str, Any]:
        try:
            return service.search(query, k, mode, path, rerank)
        except GgufEmbedError as exc:
            raise fail(exc) from exc

    @server.tool(description=GET_DOC, annotations=read_only)
    def get(
        path: Annotated[str, Field(description="The file, as search returned it (or "
                                               "relative to an indexed folder).")],
        start_line: Annotated[int | None, Field(ge=1, description="First line (1-based).")
                              ] = None,
        end_line: Annotated[int | None, Field(ge=1, description="Last line (inclusive).")
                            ] = None,
        page: Annotated[int | None, Field(ge=1, description="PDFs only: the page.")] = None,
    ) -> dict[str, Any]:
        try:
            return service.get(path, start_line, end_line, page)
        except GgufEmbedError as exc:
            raise fail(exc) from exc

    @server.tool(description=STATUS_DOC, annotations=read_only)
    def status() -> dict[str, Any]:
        return service.status()

    return server


def run(service: Service, *, http: bool = False, host: str = "127.0.0.1", port: int = 8765,
        api_key: str | None = None, sock: socket.socket | None = None,
        ready: Callable[[], None] | None = None) -> None:
    """Serve until the client goes away (stdio) or until interrupted (HTTP); blocking.  Over
    HTTP, on ``sock`` if given (bound first, see :func:`gguf_embed.server.bind`: with port 0
    the system picks the port, and the Host check uses the real one); ``ready`` is called
    once it serves (see :func:`gguf_embed.server.run_app`; at once for stdio)."""
    server = create_server(service)
    if not http:
        if ready is not None:
            ready()
        server.run("stdio")
        return
    from .http_guard import HostGuard
    from .server import bind, run_app

    if sock is None:
        sock = bind(host, port)
    port = sock.getsockname()[1]
    app = HostGuard(server.streamable_http_app(host=host), host=host, port=port,
                    api_key=api_key)
    run_app(app, sock, ready=ready)


__all__ = ["Service", "create_server", "run"]
