"""The smallest real index: one Markdown document about otters, indexed with the fake engine
(for tests that need an index to search but not what is in it)."""

from __future__ import annotations

from pathlib import Path

from gguf_embed.index import Index
from gguf_embed.testing import FakeEngine


def small_index(tmp_path: Path) -> Path:
    """``tmp_path/i.db``, the index of ``tmp_path/docs/a.md``."""
    docs = tmp_path / "docs"
    docs.mkdir()
    (docs / "a.md").write_text("# Otters\n\nOtters hold hands while they sleep.\n")
    db = tmp_path / "i.db"
    with Index(db, FakeEngine()) as index:
        index.add([docs])
    return db
