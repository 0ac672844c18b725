"""A folder tree of small documents indexed into ``i.db`` with the fake engine, and the paths
a search filtered by ``--path`` finds in it: the fixture of the ``--path`` tests."""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path

from gguf_embed.index import Index
from gguf_embed.testing import FakeEngine


def make_index(base: Path, files: Iterable[str], text: str, roots: Iterable[str]) -> None:
    """Write ``text`` to each of ``files`` (relative to ``base``) and index the folders
    ``roots`` into ``base/i.db``."""
    for name in files:
        (base / name).parent.mkdir(parents=True, exist_ok=True)
        (base / name).write_text(text)
    with Index(base / "i.db", FakeEngine()) as index:
        index.add([base / r for r in roots])


def found(base: Path, path: str, mode: str, query: str) -> set[str]:
    """The paths, relative to ``base``, that ``query`` finds in ``base/i.db`` under ``path``."""
    with Index(base / "i.db", FakeEngine(), readonly=True) as index:
        return {os.path.relpath(h.path, base)
                for h in index.search(query, k=50, mode=mode, path=path)}
