"""What may be served from an index: :class:`Bounds`, the real paths its walks may enter
(the roots, and the symlink targets followed under them), and :class:`Link`, a symlink a walk
met (see walk.py and docs/security.md).  Apart from walk.py so that a search, which checks
every result against the bounds, does not import the walk and its ignore-rule machinery."""

from __future__ import annotations

import os
from collections.abc import Collection, Sequence
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Link:
    """A symlink met inside a root: followed (``follow_symlinks`` and a target outside the
    roots) or not; ``target`` is its real path."""

    path: Path
    target: str
    root: Path
    outside: bool  # the target leaves the roots
    followed: bool


class Bounds:
    """Real paths a walk may index (its roots, and the targets of the links it followed), and
    the one rule for what may be served from an index: a document whose real path is outside
    its index's roots and the link targets recorded for them is not."""

    def __init__(self, roots: Sequence[str | Path], targets: Sequence[str] = ()) -> None:
        self.paths = {os.path.realpath(r) for r in roots} | set(targets)
        self.followed: set[str] = set()  # targets of the links followed by this walk
        self._verdicts: dict[str, bool] = {}

    def inside(self, real: str) -> bool:
        """Whether the real path ``real`` is at or under one of the bounds."""
        return self.holder(real) is not None

    def holder(self, real: str) -> str | None:
        """The innermost bound that the real path ``real`` is at or under, or None."""
        return innermost(real, self.paths)

    def allows(self, path: str) -> bool:
        """Whether ``path`` (as stored in an index) may be served: its real path is inside.
        Without roots (an index that never recorded them) a document's own folder is the
        bound, so a symlink out of it is still refused."""
        verdict = self._verdicts.get(path)
        if verdict is None:
            folder = os.path.realpath(os.path.dirname(path)) if not self.paths else ""
            verdict = self.holds(os.path.realpath(path), folder)
            self._verdicts[path] = verdict
        return verdict

    def holds(self, real: str, folder: str) -> bool:
        """:meth:`allows` for a path already resolved: ``real`` is its real path, ``folder``
        the real path of the folder it is listed in (the bound when there are no roots)."""
        if self.paths:
            return self.inside(real)
        return under(real, folder)

    def decide(self, path: Path, real: str, root: Path, follow: bool) -> Link:
        """Whether a walk follows the symlink ``path`` (real path ``real``) found in ``root``;
        a followed target joins the bounds (a second link to it is then not followed)."""
        if self.inside(real):
            return Link(path, real, root, outside=False, followed=False)
        if follow:
            self.paths.add(real)
            self.followed.add(real)
        return Link(path, real, root, outside=True, followed=follow)


def under(path: str, folder: str) -> bool:
    """Whether ``path`` is ``folder`` or inside it (compared as strings, nothing resolved)."""
    return path == folder or path.startswith(folder.rstrip(os.sep) + os.sep)


def innermost(path: str, paths: Collection[str]) -> str | None:
    """The innermost of ``paths`` that ``path`` is or is inside (compared as strings, nothing
    resolved), or None; one set lookup per folder above ``path``: cheap for many ``paths``."""
    if not paths:
        return None
    probe = path
    while True:
        if probe in paths:
            return probe
        up = os.path.dirname(probe)
        if up == probe:
            return None
        probe = up


__all__ = ["Bounds", "Link", "innermost", "under"]
