"""What a batch of changed paths means for an index (see :mod:`gguf_embed.watch`).

:func:`plan` turns changed paths into what to (re)read and which scopes to reconcile, with the
same ignore rules as a walk from the watched roots: an edited ``.gitignore`` re-reads its folder,
so newly ignored files leave the index and re-included ones come in.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pathspec

from .bounds import under
from .walk import (
    ALWAYS_SKIP,
    IGNORE_FILES,
    Bounds,
    Found,
    Link,
    Refused,
    Rules,
    _ignore_specs,
    _ignored,
    _walk_dir,
    home_rules,
    links_on_way,
    secret_file,
)


@dataclass
class Plan:
    found: list[Found]  # files to (re)read
    scopes: list[str]  # files and folders whose index entries are reconciled with ``found``
    refused: list[Refused]
    links: list[Link] = field(default_factory=list)  # symlinks met, followed or not


def plan(changed: Iterable[str | Path], roots: Sequence[str | Path], rules: Rules) -> Plan:
    """What a batch of changed paths means for the index: files to read and scopes in which
    every indexed document not among them is gone (deleted, moved away, or now ignored)."""
    abs_roots = [Path(os.path.abspath(r)) for r in roots]
    include = rules._spec(rules.include)
    exclude = rules._spec(rules.exclude)
    wanted: set[str] = set()
    for raw in changed:
        path = os.path.abspath(raw)
        if rules.skip and os.path.realpath(path) in rules.skip:
            continue
        if os.path.basename(path) in IGNORE_FILES and rules.use_ignore_files:
            path = os.path.dirname(path)  # new ignore rules: re-read the folder they apply to
        if _root_of(path, abs_roots) is not None:
            wanted.add(path)
    # a root that is gone (renamed, moved, unmounted) prunes nothing: watch() pauses it
    scopes = [s for s in _outermost(wanted) if os.path.exists(str(_root_of(s, abs_roots)))]
    found: list[Found] = []
    refused: list[Refused] = []
    links: list[Link] = []
    bounds = Bounds(abs_roots)
    for scope in scopes:
        root = _root_of(scope, abs_roots)
        assert root is not None
        if not root.is_dir():  # a watched file (or a watched root that is gone)
            if os.path.isfile(scope):
                found.append(Found(Path(scope), Path(scope).parent))
            continue
        target = Path(scope)
        on_way = links_on_way(root, target, bounds, rules.follow_symlinks)
        # a change under a link not followed was reported when the link was met: only a new
        # link itself counts (a link to /var/log would otherwise be news at every write)
        links += [link for link in on_way if link.followed or str(link.path) == scope]
        if on_way and not on_way[-1].followed:
            continue  # reached through a symlink a walk does not follow: pruned there
        home: list[Any] = []
        if on_way and rules.use_ignore_files:  # under a followed link: its target's rules
            at_home = home_rules(on_way[-1].target, os.path.isdir(on_way[-1].target))
            if at_home is None or (at_home and _ignored(
                    Path(os.path.realpath(scope)), os.path.isdir(scope), at_home)):
                continue
            home = at_home
        specs = _context(root, target, rules, include, exclude)
        if specs is None:
            continue  # ignored: an indexed document there is pruned
        if os.path.isdir(scope):
            above = {os.path.realpath(p) for p in (target, *target.parents)
                     if p == root or root in p.parents}
            for item in _walk_dir(root, rules, include, exclude, start=target, specs=specs,
                                  above=above, bounds=bounds, home=home):
                if isinstance(item, Refused):
                    refused.append(item)
                elif isinstance(item, Link):
                    links.append(item)
                else:
                    found.append(item)
        elif os.path.isfile(scope) and _file_allowed(target, root, specs, rules, include,
                                                     exclude):
            found.append(Found(target, root))
    return Plan(found, scopes, refused, links)


def _root_of(path: str, roots: list[Path]) -> Path | None:
    best = None
    for root in roots:
        if under(path, str(root)) and (best is None or len(str(root)) > len(str(best))):
            best = root
    return best


def _outermost(paths: set[str]) -> list[str]:
    """The paths not inside another one of them, sorted."""
    kept: set[str] = set()
    for path in sorted(paths, key=len):
        parent, up = path, os.path.dirname(path)
        inside = False
        while up != parent:
            if up in kept:
                inside = True
                break
            parent, up = up, os.path.dirname(up)
        if not inside:
            kept.add(path)
    return sorted(kept)


def _context(root: Path, target: Path, rules: Rules, include: Any, exclude: Any
             ) -> list[tuple[Path, pathspec.PathSpec]] | None:
    """The ignore specs of the folders above ``target`` (as a walk from ``root`` would have
    gathered them), or None when a folder on the way, or ``target`` itself as a folder, is
    ignored or always skipped."""
    specs: list[tuple[Path, pathspec.PathSpec]] = []
    folder = root
    for name in target.relative_to(root).parts:
        if rules.use_ignore_files:
            specs += [(folder, s) for s in _ignore_specs(folder)]
        path = folder / name
        if path != target or path.is_dir():
            rel = path.relative_to(root).as_posix()
            if name in ALWAYS_SKIP or _ignored(path, True, specs) or (
                    exclude and exclude.match_file(rel + "/")):
                return None
        folder = path
    return specs


def _file_allowed(path: Path, root: Path, specs: list[tuple[Path, pathspec.PathSpec]],
                  rules: Rules, include: Any, exclude: Any) -> bool:
    rel = path.relative_to(root).as_posix()
    if _ignored(path, False, specs) or secret_file(path.name):
        return False
    if exclude and exclude.match_file(rel):
        return False
    return not (include and not include.match_file(rel))


__all__ = ["Plan", "plan"]
