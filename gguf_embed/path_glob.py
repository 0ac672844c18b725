"""A user's path glob read as shell users write it, turned into SQLite GLOBs on the stored
absolute paths (see :func:`gguf_embed.index_paths.glob` for how a filter becomes one).

SQLite's GLOB differs from fnmatch and bash in two ways users meet:

- ``[!a]`` is "``!`` or ``a``" to SQLite, which negates with ``[^a]``; a shell user means
  "not ``a``".  A class opening with ``!`` is rewritten to open with ``^`` (``[^a]`` keeps
  working).
- ``**`` as a whole path segment (``docs/**/*.md``) is "zero or more folders" in bash's
  globstar, zsh, gitignore and pathlib; SQLite's ``*`` already crosses ``/``, so
  ``docs/**/x.md`` read by SQLite needs at least one folder between ``docs/`` and ``x.md``.
  Such a ``**/`` becomes two GLOBs, with and without ``*/`` (a path matching either
  matches); where what is around it already crosses folders (``docs/**/*.md``), one.

Outside the rewrite, ``*`` and ``?`` keep SQLite's meaning: they cross ``/`` too, so
``docs/*.md`` also matches ``docs/2024/a.md``.  A filter is therefore one GLOB or several
(:data:`PathGlob`), put in SQL by :func:`where`."""

from __future__ import annotations

from collections.abc import Sequence

from .errors import InputError, quoted

PathGlob = str | tuple[str, ...]
"""One SQLite GLOB, or several: a path matching any of them matches."""

MAX_GLOBS = 32  # GLOBs one filter may become (five ``**/`` that each add a choice)
_FOLDERS = object()  # a whole-segment ``**/``: zero or more folders


def where(column: str, path_glob: PathGlob) -> tuple[str, tuple[str, ...]]:
    """The SQL condition that ``column`` matches ``path_glob``, and its parameters."""
    globs = (path_glob,) if isinstance(path_glob, str) else tuple(path_glob)
    return "(" + " OR ".join([f"{column} GLOB ?"] * len(globs)) + ")", globs


WILDCARDS = "*?["  # what makes a GLOB more than the text it is


def has_wildcard(text: str) -> bool:
    """Whether ``text`` holds ``*``, ``?`` or ``[``, so is a glob rather than a name."""
    return any(ch in text for ch in WILDCARDS)


def literal(path: str) -> str:
    """``path`` as a GLOB that matches exactly it: ``*``, ``?`` and ``[`` each in a class."""
    return "".join(f"[{ch}]" if ch in WILDCARDS else ch for ch in path)


def class_end(pattern: str, start: int) -> int:
    """Where the class opened by the ``[`` at ``start`` ends (the index after its ``]``), as
    SQLite reads it once a ``!`` first in it is read as ``^``: a ``]`` first in it (after the
    ``^`` or ``!``) is a member; ``len(pattern)`` if no ``]`` closes it."""
    i, n = start + 1, len(pattern)
    if i < n and pattern[i] in "^!":
        i += 1
    if i < n and pattern[i] == "]":
        i += 1
    while i < n and pattern[i] != "]":
        i += 1
    return i + 1 if i < n else n


def glob_problem(pattern: str) -> str | None:
    """Why the glob ``pattern`` can match nothing, read as :func:`to_sqlite` makes SQLite read
    it (``[!`` and ``[^`` both negate): a ``[`` whose class is never closed by ``]`` (a ``]``
    first in it, after an optional ``^`` or ``!``, is a member), or a range whose ends are
    reversed; None if it is well formed."""
    i, n = 0, len(pattern)
    while i < n:
        if pattern[i] != "[":
            i += 1
            continue
        start, i = i, i + 1
        if i < n and pattern[i] in "^!":
            i += 1
        if i < n and pattern[i] == "]":
            i += 1
        prior = ""
        while i < n and pattern[i] != "]":
            if pattern[i] == "-" and prior and i + 1 < n and pattern[i + 1] != "]":
                if pattern[i + 1] < prior:
                    return (f"the range {prior}-{pattern[i + 1]} in {pattern[start:]!r} is "
                            f"reversed, so it matches no character")
                prior, i = "", i + 2
                continue
            prior, i = pattern[i], i + 1
        if i >= n:
            return (f"the [ at character {start + 1} opens a class that no ] closes; "
                    f"write [[] for a [ in a name")
        i += 1
    return None


def resolve_dots(pattern: str, base: Sequence[str] | None = None) -> str:
    """The well-formed glob ``pattern`` with its ``.`` and ``..`` segments (and empty ones,
    ``//``) resolved as :func:`os.path.normpath` would, after the folders ``base`` (names
    already GLOBs that match literally, from the root; ``pattern`` is then relative to them):
    a ``..`` removes the literal name before it, and one after a segment with a wildcard
    (``*/..``, ``**/..``) is refused with :class:`InputError`, since which folder it leaves
    depends on what the wildcard matched.  A glob ending with ``/``, ``/.`` or ``/..`` keeps
    ending with ``/`` (what is under the folders it names)."""
    absolute = base is not None or pattern.startswith("/")
    kept = [(name, False) for name in base or ()]  # (segment, whether it has a wildcard)
    segments = _segments(pattern)
    for segment in segments:
        if segment in ("", "."):
            continue
        if segment != "..":
            kept.append((segment, has_wildcard(segment)))
        elif kept and kept[-1][1]:
            raise InputError(f"the path filter (--path) '{quoted(pattern)}' has '..' after "
                             f"'{quoted(kept[-1][0])}', a folder a wildcard matches: write the "
                             f"folder it means without '..'", param="path")
        elif kept and kept[-1][0] != "..":
            kept.pop()
        elif not absolute:  # above where a relative glob starts: kept as written
            kept.append(("..", False))
    folder = segments[-1] in ("", ".", "..") and bool(kept)
    return ("/" if absolute else "") + "/".join(s for s, _ in kept) + ("/" if folder else "")


def _segments(pattern: str) -> list[str]:
    """``pattern`` cut at each ``/`` outside a class (``[/]`` is one character)."""
    segments, start, i, n = [], 0, 0, len(pattern)
    while i < n:
        if pattern[i] == "[":
            i = class_end(pattern, i)
        elif pattern[i] == "/":
            segments.append(pattern[start:i])
            start = i = i + 1
        else:
            i += 1
    segments.append(pattern[start:])
    return segments


def to_sqlite(pattern: str, prefix: str = "") -> PathGlob:
    """The well-formed glob ``pattern`` (see :func:`glob_problem`) as SQLite GLOBs, after
    ``prefix`` (a GLOB already, ending with ``/``, or empty when ``pattern`` starts the full
    path): ``[!`` negates, a whole-segment ``**/`` is zero or more folders, a whole-segment
    ``**`` at the end everything below.  Raises :class:`InputError` if it would take more
    than :data:`MAX_GLOBS` GLOBs."""
    outs = [prefix]
    parts = _parts(pattern)
    for at, part in enumerate(parts):
        if part is not _FOLDERS:
            outs = [out + str(part) for out in outs]
            continue
        following = parts[at + 1] if at + 1 < len(parts) else ""
        grown: list[str] = []
        for out in outs:
            if not out:  # the start of an absolute path: it has folders before the rest
                grown.append("*/")
            elif following == "*" or out.endswith("*/"):  # its ``*`` crosses folders
                grown.append(out)
            else:
                grown += [out, out + "*/"]
        outs = list(dict.fromkeys(grown))
        if len(outs) > MAX_GLOBS:
            raise InputError(f"the path filter (--path) has too many '**/' (at most "
                             f"{MAX_GLOBS} combinations of folders); write fewer",
                             param="path")
    return outs[0] if len(outs) == 1 else tuple(outs)


def _parts(pattern: str) -> list[str | object]:
    """``pattern`` cut into SQLite GLOB pieces: classes (``[!`` made ``[^``), one ``*`` for a
    run of them, :data:`_FOLDERS` for a whole-segment ``**/`` (several in a row are one), and
    single characters."""
    parts: list[str | object] = []
    i, n = 0, len(pattern)
    while i < n:
        ch = pattern[i]
        if ch == "[":
            end = class_end(pattern, i)
            body = pattern[i + 1:end]
            parts.append("[" + ("^" + body[1:] if body.startswith("!") else body))
            i = end
        elif ch == "*":
            j = i
            while j < n and pattern[j] == "*":
                j += 1
            segment = j - i > 1 and (not parts or parts[-1] in ("/", _FOLDERS))
            if segment and j < n and pattern[j] == "/":
                if not parts or parts[-1] is not _FOLDERS:
                    parts.append(_FOLDERS)
                i = j + 1
            else:
                parts.append("*")
                i = j
        else:
            parts.append(ch)
            i += 1
    return parts
