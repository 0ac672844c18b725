"""Walking files and folders with .gitignore / .ggufembedignore rules and include/exclude globs.

Symlinks (see docs/security.md): what is indexed is what search, MCP and HTTP serve, so a walk
stays inside its roots (their real paths).  A symlink found inside a root is never followed
when its target leaves the roots (``/etc``, ``~/.ssh``): it is reported as a :class:`Link`
(``outside``), and the documents indexed under it before are dropped; ``follow_symlinks``
follows such links, each target once, with the same ignore rules and globs as any folder, and
the rules of the git repository the target really lives in (:func:`home_rules`).  A
symlink whose target stays inside the roots is not followed either: the walk reaches the
target under its own path, so nothing is indexed twice, a link cannot carry a folder past the
ignore rules of its real place, and no link loop can be walked.  A root named by a symlink is
followed (the user named it).
"""

from __future__ import annotations

import errno
import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import pathspec

from .bounds import Bounds, Link

IGNORE_FILES = (".gitignore", ".ggufembedignore")
# folders of credentials (keys, cloud and cluster logins, a password store) are skipped too
SECRET_DIRS = {".ssh", ".gnupg", ".aws", ".azure", ".kube", ".docker", ".password-store"}
ALWAYS_SKIP = {".git", ".hg", ".svn", "__pycache__", ".ruff_cache", ".pytest_cache",
               ".mypy_cache", ".venv", "node_modules", *SECRET_DIRS}
# Files that hold credentials by convention: skipped inside a folder (a file named on the
# command line is indexed as asked).  Search would otherwise serve them to agents and HTTP.
SECRET_FILES = pathspec.GitIgnoreSpec.from_lines([
    ".env", ".env.*", "!.env.example", "!.env.sample", "!.env.template", "*.pem", "*.key",
    "*.p12", "*.pfx", "*.jks", "*.keystore", "id_rsa", "id_dsa", "id_ecdsa", "id_ed25519",
    ".netrc", ".pgpass", ".git-credentials", ".npmrc", ".pypirc", ".htpasswd",
])
SECRET_REASON = "holds credentials by convention: not indexed (name the file itself to index it)"


def secret_file(name: str) -> bool:
    """Whether a file of this name holds credentials by convention (``.env``, keys, netrc)."""
    return SECRET_FILES.match_file(name)


def secret_path(path: str) -> bool:
    """Whether ``path`` is a credential file by convention or lies in a folder of them
    (``~/.ssh/config``): what is never read from disk to be served, whatever an index says."""
    parts = Path(path).parts
    return bool(parts) and (secret_file(parts[-1]) or any(p in SECRET_DIRS for p in parts[:-1]))


Specs = list[tuple[Path, pathspec.PathSpec]]  # ignore rules in force, with their folders


@dataclass(frozen=True)
class Found:
    path: Path  # absolute, as the user named it (symlinks in it kept)
    root: Path


@dataclass(frozen=True)
class Refused:
    path: Path
    reason: str
    unseen: bool = False  # could not be looked into: keep the documents indexed under it


@dataclass(frozen=True)
class Rules:
    include: tuple[str, ...] = ()
    exclude: tuple[str, ...] = ()
    use_ignore_files: bool = True
    skip: frozenset[str] = frozenset()  # real paths never to index (the index file itself)
    follow_symlinks: bool = False  # follow links whose target leaves the roots

    def _spec(self, globs: Sequence[str]) -> pathspec.PathSpec | None:
        return pathspec.GitIgnoreSpec.from_lines(globs) if globs else None


def links_on_way(root: Path, target: Path, bounds: Bounds, follow: bool) -> list[Link]:
    """The symlinks between ``root`` (excluded) and ``target`` (included), as a walk from
    ``root`` would decide them; a walk stops at the first one not followed (the last here)."""
    out: list[Link] = []
    path = root
    for name in target.relative_to(root).parts:
        path = path / name
        if path.is_symlink():
            link = bounds.decide(path, os.path.realpath(path), root, follow)
            out.append(link)
            if not link.followed:
                break
    return out


def walk(roots: Sequence[str | Path], rules: Rules | None = None
         ) -> Iterator[Found | Refused | Link]:
    rules = rules or Rules()
    include = rules._spec(rules.include)
    exclude = rules._spec(rules.exclude)
    bounds = Bounds([os.path.abspath(r) for r in roots])
    for raw in roots:
        root = Path(os.path.abspath(raw))
        problem = root_problem(root)
        if problem is not None:
            yield Refused(root, problem, unseen=problem.startswith("unreadable"))
        elif root.is_file():
            yield Found(root, root.parent)
        elif not root.is_dir():
            yield Refused(root, "not a regular file or folder")
        else:
            yield from _walk_dir(root, rules, include, exclude, bounds=bounds)


def walk_once(roots: Sequence[str | Path], rules: Rules | None = None
              ) -> list[Found | Refused | Link]:
    """:func:`walk` over ``roots`` each named once (``c`` and ``./c/`` are one root), with each
    file, refusal and symlink reported once though roots overlap (``c`` and ``c/notes``): a
    root inside another is still walked as a root of its own, with its own ignore rules,
    ``--exclude`` / ``--include`` globs (relative to it) and what naming it means
    (``c/node_modules``, a folder ``c``'s .gitignore ignores, a ``.env`` file named), so what
    is indexed is what each root alone would index, but a file both reach is one file; a file
    refused under one root and found under another (a credential file named) is found."""
    items = list(walk(list(dict.fromkeys(os.path.abspath(r) for r in roots)), rules))
    found = {item.path for item in items if isinstance(item, Found)}
    seen: set[tuple[type, Path]] = set()
    once: list[Found | Refused | Link] = []
    for item in items:
        key = (type(item), item.path)
        if key not in seen and not (isinstance(item, Refused) and item.path in found):
            seen.add(key)
            once.append(item)
    return once


def root_problem(path: str | Path) -> str | None:
    """Why ``path`` cannot be indexed as a root (missing, unreadable), or None."""
    path = os.path.abspath(path)
    try:
        os.stat(path)
    except OSError as exc:
        if exc.errno in (errno.ENOENT, errno.ENOTDIR):
            return "broken symlink" if os.path.islink(path) else "not found"
        return f"unreadable: {exc.strerror or exc}"
    try:
        if os.path.isdir(path):
            with os.scandir(path):
                pass
        elif os.path.isfile(path):  # never open a fifo or device: that could block
            with open(path, "rb"):
                pass
    except OSError as exc:
        kind = "unreadable folder" if os.path.isdir(path) else "unreadable"
        return f"{kind}: {(exc.strerror or str(exc)).lower()}"
    return None


def _walk_dir(root: Path, rules: Rules, include: pathspec.PathSpec | None,
              exclude: pathspec.PathSpec | None, *, start: Path | None = None,
              specs: list[tuple[Path, pathspec.PathSpec]] | None = None,
              above: set[str] | None = None, bounds: Bounds | None = None,
              home: Specs | None = None) -> Iterator[Found | Refused | Link]:
    """Depth-first in name order, with an explicit stack (no recursion limit on depth).

    ``start`` walks only a folder inside ``root`` (a watch batch), given the ignore ``specs``
    of the folders above it and their real paths (``above``), as a walk from ``root`` has.
    ``bounds`` (default: ``root``) decides which symlinks are followed; ``home`` are the
    ignore rules of the real place of a followed link's target that ``start`` is under."""
    bounds = bounds if bounds is not None else Bounds([root])
    folder = start or root
    real_start = os.path.realpath(folder)
    opened = _open_folder(folder, specs or [], rules)
    if isinstance(opened, Refused):
        yield opened
        return
    stack: list[tuple[str, Specs, Iterator[os.DirEntry[str]], Specs]]
    stack = [(real_start, opened[0], iter(opened[1]), home or [])]
    # real paths of the folders on the way down (symlink loops)
    on_path = {real_start, *(above or ())}
    while stack:
        parent_real, specs, entries, home_specs = stack[-1]
        entry = next(entries, None)
        if entry is None:
            stack.pop()
            on_path.discard(parent_real)
            continue
        path = Path(entry.path)
        try:
            is_dir = entry.is_dir()  # follows symlinks
        except OSError:
            is_dir = False
        try:
            link = entry.is_symlink()
            real = os.path.realpath(path) if link else os.path.join(parent_real, entry.name)
            if _ignored(path, is_dir, specs) or (rules.skip and real in rules.skip) or (
                    home_specs and _ignored(Path(parent_real, entry.name), is_dir, home_specs)):
                continue
            rel = path.relative_to(root).as_posix()
            if is_dir:
                if entry.name in ALWAYS_SKIP or (exclude and exclude.match_file(rel + "/")):
                    continue
                if real in on_path:
                    yield Refused(path, "symlink loop (links back to a folder above it)")
                    continue
                entered = home_specs
                if link:
                    decided = bounds.decide(path, real, root, rules.follow_symlinks)
                    if decided.followed:
                        at_home = home_rules(real, True) if rules.use_ignore_files else []
                        if at_home is None:
                            continue  # ignored where it really is
                        entered = at_home
                    yield decided
                    if not decided.followed:
                        continue
                elif real in bounds.followed:
                    continue  # a followed link's target, reached again by its real path
                opened = _open_folder(path, specs, rules)
                if isinstance(opened, Refused):
                    yield opened
                    continue
                stack.append((real, opened[0], iter(opened[1]), entered))
                on_path.add(real)
                continue
            if link and not path.exists():
                yield Refused(path, "broken symlink")
                continue
            if not entry.is_file() and not path.is_file():
                continue  # sockets, fifos, devices
        except OSError as exc:
            yield Refused(path, f"unreadable: {(exc.strerror or str(exc)).lower()}", unseen=True)
            continue
        if exclude and exclude.match_file(rel):
            continue
        if include and not include.match_file(rel):
            continue
        if secret_file(entry.name):
            yield Refused(path, SECRET_REASON)
            continue
        if link:
            decided = bounds.decide(path, real, root, rules.follow_symlinks)
            if decided.followed and rules.use_ignore_files and home_rules(real, False) is None:
                continue  # ignored where it really is
            yield decided
            if not decided.followed:
                continue
        yield Found(path, root)


def _open_folder(folder: Path, specs: list[tuple[Path, pathspec.PathSpec]], rules: Rules
                 ) -> tuple[list[tuple[Path, pathspec.PathSpec]], list[os.DirEntry[str]]] | Refused:
    """A folder's entries (by name) and the ignore rules in force inside it, or why not.  An
    ignore file that cannot be read refuses its folder: indexing it could take in exactly the
    files it was written to keep out."""
    try:
        with os.scandir(folder) as it:
            entries = sorted(it, key=lambda e: e.name)
    except OSError as exc:
        return Refused(folder, f"unreadable folder: {(exc.strerror or str(exc)).lower()}",
                       unseen=True)
    if rules.use_ignore_files:
        names = {e.name: e for e in entries}
        specs = list(specs)
        for name in IGNORE_FILES:
            entry = names.get(name)
            try:
                if entry is None or not entry.is_file():
                    continue
                with open(entry.path, encoding="utf-8", errors="replace") as fh:
                    lines = fh.read().splitlines()
            except OSError as exc:
                return Refused(folder / name, f"unreadable {name} (its folder was skipped): "
                                              f"{(exc.strerror or str(exc)).lower()}",
                               unseen=True)
            specs.append((folder, pathspec.GitIgnoreSpec.from_lines(lines)))
    return specs, entries


def home_rules(real: str, is_dir: bool) -> Specs | None:
    """The ignore rules that apply to the real path of a followed link's target where it
    really is: those of the folders from its git repository's top (the nearest folder above
    it with a ``.git``) down to it, so a link cannot carry a folder or file past the
    rules of its own repository; None when they ignore it (or a folder on the way).  Outside a
    repository there are none (as for a folder named to index)."""
    target = Path(real)
    top = next((p for p in target.parents if (p / ".git").exists()), None)
    if top is None:
        return []
    specs: Specs = []
    folder = top
    for name in target.relative_to(top).parts:
        specs += [(folder, spec) for spec in _ignore_specs(folder)]
        path = folder / name
        if name in ALWAYS_SKIP or _ignored(path, is_dir if path == target else True, specs):
            return None
        folder = path
    return specs


def _ignore_specs(folder: Path) -> list[pathspec.PathSpec]:
    """The rules of one folder's ignore files, in precedence order (unreadable ones left out:
    a walk refuses such a folder before this is asked)."""
    specs: list[pathspec.PathSpec] = []
    for name in IGNORE_FILES:
        file = folder / name
        try:
            if not file.is_file():
                continue
            lines = file.read_text(encoding="utf-8", errors="replace").splitlines()
        except OSError:
            continue
        specs.append(pathspec.GitIgnoreSpec.from_lines(lines))
    return specs


def _ignored(path: Path, is_dir: bool, specs: list[tuple[Path, pathspec.PathSpec]]) -> bool:
    """Git's precedence: the deepest ignore file with a matching pattern decides (so a nested
    ``!keep.log`` re-includes what a parent's ``*.log`` left out), and in one folder
    .ggufembedignore overrides .gitignore."""
    for base, spec in reversed(specs):
        rel = path.relative_to(base).as_posix() + ("/" if is_dir else "")
        decided = spec.check_file(rel).include
        if decided is not None:
            return decided
    return False
