"""The paths an index is given and may serve (see :class:`gguf_embed.index.Index`): the checks
that refuse a run before anything changes (a missing or unreadable path, an empty folder over
indexed documents), the roots and followed symlink targets an index records, the
:class:`~gguf_embed.bounds.Bounds` drawn from them, and a user's path filter as a GLOB.
Searching uses this module: the walk is imported only by :func:`check_roots`, when called."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ._text import check_text
from .bounds import Bounds, under
from .errors import InputError, PathError, quoted
from .path_glob import PathGlob, glob_problem, has_wildcard, literal, resolve_dots, to_sqlite

if TYPE_CHECKING:
    from .store import Store

MAX_PATH_FILTER = 4096  # characters (SQLite refuses GLOB patterns over 50,000 bytes)


def check_roots(paths: Sequence[str | Path]) -> None:
    """Raise :class:`PathError` naming every path that does not exist or cannot be read."""
    from .walk import root_problem

    problems = [f"{quoted(p)}: {why}" for p in once(paths) if (why := root_problem(p))]
    if problems:
        raise PathError(_refusal(problems))


def check_paths(store: Store, paths: Sequence[str | Path]) -> None:
    """Raise :class:`PathError` naming every path that is missing or unreadable, or an
    empty folder ``store`` holds documents under (an unmounted drive?)."""
    check_roots(paths)
    problems = []
    docs = None
    for p in once(paths):
        folder = os.path.abspath(p)
        if not os.path.isdir(folder) or not _is_empty(folder):
            continue
        docs = store.documents() if docs is None else docs
        held = sum(1 for d in docs if d.startswith(folder.rstrip(os.sep) + os.sep))
        if held:
            problems.append(f"{quoted(p)}: an empty folder, but the index holds {held} "
                            f"documents under it (an unmounted drive?)")
    if problems:
        raise PathError(_refusal(problems))


def once(paths: Sequence[str | Path]) -> list[str | Path]:
    """``paths`` without repeats (``c``, ``./c/`` and the absolute path are one), in order."""
    first: dict[str, str | Path] = {}
    for p in paths:
        first.setdefault(os.path.abspath(p), p)
    return list(first.values())


def _refusal(problems: list[str]) -> str:
    return (f"{'; '.join(problems)}; nothing was changed (pass --prune-missing to remove "
            f"the documents indexed under {'it' if len(problems) == 1 else 'them'})")


def _is_empty(folder: str) -> bool:
    with os.scandir(folder) as entries:
        return next(entries, None) is None


def roots(meta: dict[str, Any]) -> list[str]:
    """The files and folders ever given to ``Index.add`` (absolute), as ``meta`` records."""
    return list(meta.get("roots") or [])


def remember_roots(store: Store, paths: Sequence[str | Path]) -> None:
    known = set(roots(store.meta))
    new = {os.path.abspath(p) for p in paths} - known
    if new:
        store.set_meta({"roots": sorted(known | new)})


def remember_links(store: Store, walked: Sequence[str], followed: dict[str, list[str]]) -> None:
    """Record the targets of the symlinks followed under each root (what may be served
    from outside the roots): roots ``walked`` in full have theirs replaced, others
    added to."""
    links: dict[str, list[str]] = dict(store.meta.get("links") or {})
    for root in walked:
        links.pop(root, None)
    for root, targets in followed.items():
        links[root] = sorted(set(links.get(root, [])) | set(targets))
    if links != (store.meta.get("links") or {}):
        store.set_meta({"links": links})


def bounds(meta: dict[str, Any]) -> Bounds:
    """The bounds of what may be served from the index recording ``meta``: its roots and
    the symlink targets followed under them."""
    links = meta.get("links") or {}
    return Bounds(roots(meta), [t for targets in links.values() for t in targets])


def glob(path: str | None, roots: Sequence[str] = ()) -> PathGlob | None:
    """A user's path filter as a GLOB on the absolute paths stored, or several any of which
    may match (None: no filter).

    A path that names an existing file or folder (relative to the current folder) matches
    exactly that file, or the documents under that folder, even when its name holds ``*``,
    ``?`` or ``[`` (``notes/[draft] plan.md``), under each name the index may hold it by
    (:func:`spellings`: through a symlink, its target, or the index's ``roots``); otherwise a
    path with one of them is a glob (``*.md``, ``*/2024/*``; a relative one matches the end
    of the full path from a folder's start, or starting ``./`` or ``../``, from the current
    folder; ``.`` and ``..`` are resolved as in a path, see
    :func:`~gguf_embed.path_glob.resolve_dots`), and any other path (gone from disk) is
    taken as a file or a folder, only a folder if it ends with ``/`` (a glob ending with
    ``/`` too: ``*/2024/`` is what is under any ``2024`` folder).  Globs are read as shells
    read them where SQLite's GLOB differs: ``[!a]`` negates as ``[^a]`` does, and a
    whole-segment ``**/`` is zero or more folders (see :mod:`gguf_embed.path_glob`).  An
    empty filter and a glob that can match nothing (a ``[`` never closed, a range like
    ``[z-a]``) raise :class:`InputError`: both are mistakes, not "every document" or "none"."""
    if path is None:
        return None
    if not path.strip():
        raise InputError("the path filter (--path) is empty; leave it out to search every "
                         "document", param="path")
    check_text(path, "the path filter (--path)", "path")
    if len(path) > MAX_PATH_FILTER:
        raise InputError(f"the path filter (--path) is {len(path):,} characters long; at most "
                         f"{MAX_PATH_FILTER:,}", param="path")
    absolute = os.path.abspath(path)
    exists = os.path.lexists(absolute)
    if exists or not has_wildcard(path):
        exact = [literal(name) for name in spellings(absolute, roots)]
        inside = [name.rstrip(os.sep) + os.sep + "*" for name in exact]
        if os.path.isdir(absolute) or (not exists and path.endswith(("/", os.sep))):
            globs = inside
        else:  # a path gone from disk (a deleted folder, a file) may still be in the index
            globs = exact if exists else exact + inside
        return globs[0] if len(globs) == 1 else tuple(globs)
    problem = glob_problem(path)
    if problem:
        raise InputError(f"the path filter (--path) '{quoted(path)}' is not a valid glob: "
                         f"{problem}", param="path")
    # "." and ".." resolved as in a path; starting "./" or "../", from the current folder
    resolved = resolve_dots(path, _here() if path.startswith(("./", "../")) else None)
    if resolved.startswith("../"):  # a relative glob that climbs above its start
        resolved = resolve_dots(resolved, _here())
    if resolved.endswith("/"):  # a glob's folders, as a path's: the documents under them
        resolved += "*"
    if resolved.startswith("/"):
        return _from_folder(resolved, roots)
    if resolved.startswith("*"):
        return to_sqlite(resolved)
    return to_sqlite(resolved, "*" + os.sep)  # the end of a path, from a folder's start


def _from_folder(pattern: str, roots: Sequence[str]) -> PathGlob:
    """The absolute glob ``pattern`` as SQLite GLOBs, its leading folders without wildcards
    under each name the index may hold them by (:func:`spellings`: ``./*.md`` from a
    current folder that :func:`os.getcwd` gives resolved while the index holds it through a
    symlink, ``./nl/*.md`` with ``nl`` a symlink to an indexed folder)."""
    parts = pattern.split("/")
    n = 1
    while n < len(parts) - 1 and not has_wildcard(parts[n]):
        n += 1
    if n == 1:
        return to_sqlite(pattern)
    rest = "/".join(parts[n:])
    outs: list[str] = []
    for name in spellings("/".join(parts[:n]), roots, within=False):
        made = to_sqlite(rest, literal(name) + "/")
        outs += [made] if isinstance(made, str) else made
    outs = list(dict.fromkeys(outs))
    return outs[0] if len(outs) == 1 else tuple(outs)


def _here() -> list[str]:
    """The current folder's names, as GLOBs that match them literally."""
    return [literal(name) for name in os.getcwd().split(os.sep) if name]


def spellings(path: str, roots: Sequence[str] = (), *, within: bool = True) -> list[str]:
    """The names the index may store the file or folder at the absolute ``path`` under
    (symlinks in them kept, as the walk stores them): ``path`` itself, its real path (a
    symlink's target is indexed under its own name), the real path under each of ``roots``
    that really holds it, spelt from the root as given (a folder indexed through a symlink,
    or named from a current folder that :func:`os.getcwd` gives resolved), and with
    ``within`` each root that really lies inside it (for what is under the folder ``path``)."""
    real = os.path.realpath(path)
    names = [path, real]
    for root, root_real in _real_roots(roots):
        if root == root_real:
            continue  # spelt as it really is: ``real`` covers it
        if under(real, root_real):
            names.append(os.path.normpath(os.path.join(root, os.path.relpath(real, root_real))))
        elif within and under(root_real, real) and not under(root, path):
            names.append(root)
    return list(dict.fromkeys(names))


def _real_roots(roots: Sequence[str]) -> list[tuple[str, str]]:
    """Each of ``roots`` with its real path; a folder holding many roots (10,000 files named
    one by one) is resolved once, and each root then costs one ``lstat``."""
    folders: dict[str, str] = {}
    out = []
    for root in roots:
        if os.path.islink(root):
            out.append((root, os.path.realpath(root)))
            continue
        folder, name = os.path.split(root)
        if folder not in folders:
            folders[folder] = os.path.realpath(folder)
        out.append((root, os.path.join(folders[folder], name)))
    return out
