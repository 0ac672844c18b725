"""Walking files and folders with .gitignore / .ggufembedignore rules and include/exclude globs.

Directory symlinks are followed once; a link back into a folder already on the way is reported
as a symlink loop instead of being walked forever.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import pathspec

IGNORE_FILES = (".gitignore", ".ggufembedignore")
ALWAYS_SKIP = {".git", ".hg", ".svn", "__pycache__", ".ruff_cache", ".pytest_cache",
               ".mypy_cache", ".venv", "node_modules"}


@dataclass(frozen=True)
class Found:
    path: Path  # absolute, as the user named it (symlinks in it kept)
    root: Path


@dataclass(frozen=True)
class Refused:
    path: Path
    reason: str


@dataclass(frozen=True)
class Rules:
    include: tuple[str, ...] = ()
    exclude: tuple[str, ...] = ()
    use_ignore_files: bool = True
    skip: frozenset[str] = frozenset()  # real paths never to index (the index file itself)

    def _spec(self, globs: Sequence[str]) -> pathspec.PathSpec | None:
        return pathspec.GitIgnoreSpec.from_lines(globs) if globs else None


def walk(roots: Sequence[str | Path], rules: Rules | None = None) -> Iterator[Found | Refused]:
    rules = rules or Rules()
    include = rules._spec(rules.include)
    exclude = rules._spec(rules.exclude)
    for raw in roots:
        root = Path(os.path.abspath(raw))
        if not root.exists():
            yield Refused(root, "not found" if not root.is_symlink() else "broken symlink")
        elif root.is_file():
            yield Found(root, root.parent)
        else:
            yield from _walk_dir(root, root, [], {os.path.realpath(root)}, rules, include,
                                 exclude)


def _walk_dir(folder: Path, root: Path, specs: list[tuple[Path, pathspec.PathSpec]],
              on_path: set[str], rules: Rules, include: pathspec.PathSpec | None,
              exclude: pathspec.PathSpec | None) -> Iterator[Found | Refused]:
    if rules.use_ignore_files:
        specs = specs + [(folder, spec) for spec in _ignore_specs(folder)]
    try:
        entries = sorted(os.scandir(folder), key=lambda e: e.name)
    except PermissionError:
        yield Refused(folder, "unreadable folder: permission denied")
        return
    except OSError as exc:
        yield Refused(folder, f"unreadable folder: {exc.strerror or exc}")
        return
    for entry in entries:
        path = Path(entry.path)
        rel = path.relative_to(root).as_posix()
        try:
            is_dir = entry.is_dir()  # follows symlinks
        except OSError:
            is_dir = False
        if _ignored(path, is_dir, specs) or (rules.skip and os.path.realpath(path) in rules.skip):
            continue
        if is_dir:
            if entry.name in ALWAYS_SKIP or (exclude and exclude.match_file(rel + "/")):
                continue
            real = os.path.realpath(path)
            if real in on_path:
                yield Refused(path, "symlink loop (links back to a folder above it)")
                continue
            yield from _walk_dir(path, root, specs, on_path | {real}, rules, include, exclude)
            continue
        if entry.is_symlink() and not path.exists():
            yield Refused(path, "broken symlink")
            continue
        if not entry.is_file() and not path.is_file():
            continue  # sockets, fifos, devices
        if exclude and exclude.match_file(rel):
            continue
        if include and not include.match_file(rel):
            continue
        yield Found(path, root)


def _ignore_specs(folder: Path) -> list[pathspec.PathSpec]:
    specs = []
    for name in IGNORE_FILES:
        file = folder / name
        if file.is_file():
            try:
                specs.append(pathspec.GitIgnoreSpec.from_lines(
                    file.read_text(encoding="utf-8", errors="replace").splitlines()))
            except OSError:
                continue
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
