"""The paths the MCP tools take, read the same way by ``search``'s ``path`` filter and by
``get``: absolute (as ``search`` returns them), or relative to an indexed folder.

The server's current folder is whatever the MCP client started it in, unknown to the agent,
so it is never a base: a relative path that ``get`` reads as ``ops/a.md`` under the indexed
folder is the filter ``search`` applies too (it was taken from the current folder, and
matched nothing).  A relative path that more than one indexed folder holds is refused in both
tools, naming the candidates, rather than one of them chosen silently."""

from __future__ import annotations

import os
from pathlib import PurePath

from .errors import InputError, quoted
from .index import Index
from .path_glob import glob_problem, has_wildcard, literal


def document(index: Index, path: str) -> str:
    """The indexed document ``path`` names (absolute, as the index lists it); anything else
    is refused with :class:`InputError`."""
    if not path or "\x00" in path:
        raise InputError("path is empty", param="path")
    _refuse_dots(path)
    if os.path.isabs(path):
        known = os.path.abspath(path)
        held = [known] if index.store.has_document(known) else []
    else:
        held = [c for c in _candidates(index, path) if index.store.has_document(c)]
    if not held:
        raise InputError(f"{quoted(path)} is not in the index; only indexed files can be "
                         f"read (use a path from search results)", param="path")
    _one(path, held)
    return held[0]


def search_filter(index: Index, path: str | None) -> str | None:
    """``search``'s ``path`` as the library's filter (see
    :func:`gguf_embed.index_paths.glob`), with a relative path read from the indexed folders:
    the file or folder one of them holds, else a relative glob (the end of a path, from a
    folder's start), else the path under the first indexed folder (which matches nothing
    indexed).  An absolute path, a glob starting with ``*``, and an empty filter (which the
    library refuses) pass unchanged."""
    if path is None or not path.strip() or os.path.isabs(path) or path.startswith("*"):
        return path
    _refuse_dots(path)
    rel = path
    while rel.startswith("./"):
        rel = rel[2:].lstrip("/")
    if rel in ("", "."):
        return None  # the indexed folders themselves: everything search may return
    candidates = _candidates(index, rel)
    held = [c for c in candidates if _holds(index, c)]
    if held:
        _one(path, held)
        return held[0]
    if has_wildcard(rel):
        # a glob the library refuses keeps the caller's spelling in the error
        return path if glob_problem(rel) else "*" + os.sep + rel
    on_disk = [c for c in candidates if os.path.lexists(c)]
    return (on_disk or candidates or [path])[0]


def _candidates(index: Index, rel: str) -> list[str]:
    return list(dict.fromkeys(os.path.normpath(os.path.join(root, rel))
                              for root in index.roots))


def _holds(index: Index, path: str) -> bool:
    """Whether the index holds the document ``path`` or documents under it."""
    return index.store.has_document(path) or bool(len(index.store.document_ids(
        literal(path.rstrip(os.sep)) + os.sep + "*")))


def _refuse_dots(path: str) -> None:
    if ".." in PurePath(path).parts:
        raise InputError(f"path {quoted(repr(path))} contains '..'; pass the path as "
                         f"search returned it, or relative to an indexed folder",
                         param="path")


def _one(path: str, held: list[str]) -> None:
    if len(held) > 1:
        raise InputError(f"{quoted(path)} is in {len(held)} indexed folders "
                         f"({', '.join(quoted(h) for h in held[:5])}); pass the absolute "
                         f"path (as search returns it)", param="path")
