"""The index file on disk for a writer (see :class:`gguf_embed.index.Index`): the write lock,
taken after making the folder for a new file, and what opening it created (the file and
folders), removed again when a refused command leaves it empty."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable
from pathlib import Path

from ._lock import WriteLock
from .store import make_parent
from .store_guard import SIDE_FILES


def claim(path: Path, *, wait: bool = True,
          on_wait: Callable[[int | None], None] | None = None) -> tuple[WriteLock, list[Path]]:
    """Make the folders for the index at ``path`` and take its write lock (``wait`` for
    another writer, or raise :class:`~gguf_embed.errors.IndexBusy`).  Returns the lock, and
    what opening the index creates: ``path`` and the folders made for it, innermost first
    (nothing if it exists)."""
    new = _missing_parents(path) if not path.exists() else []
    make_parent(path)
    lock = WriteLock(path)
    try:
        lock.acquire(wait=wait, on_wait=on_wait)
    except BaseException:  # the holder may be making the file: remove folders only
        _remove_folders(new)
        raise
    if new and path.exists():
        new = []  # another writer made it while this one waited
    return lock, new


def discard(path: Path, new: list[Path]) -> None:
    """Remove the index file at ``path``, its side files and the folders in ``new`` (what
    :func:`claim` said opening it created); nothing if ``new`` is empty."""
    if not new:
        return
    for suffix in SIDE_FILES:
        with contextlib.suppress(OSError):
            os.unlink(f"{path}{suffix}")
    _remove_folders(new)


def _remove_folders(new: list[Path]) -> None:
    for folder in new[1:]:  # innermost first; only if still empty
        with contextlib.suppress(OSError):
            folder.rmdir()


def _missing_parents(path: Path) -> list[Path]:
    """``path`` and the folders above it that do not exist yet, innermost first."""
    out = [path]
    for parent in path.absolute().parents:
        if parent.exists():
            break
        out.append(parent)
    return out
