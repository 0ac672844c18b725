"""An index named like another index's side file (``X.db-wal``, ``X.db.lock``, ...), or one
whose side file is an index, is refused before anything is written: SQLite takes
``X.db-wal`` for ``X.db``'s log and empties it at the next write to ``X.db``; a ``.lock`` is
truncated and deleted by the writer, a ``.bits`` / ``.keywords`` replaced by a cache.  Tests
from the typo's side: the refused path and the real ``X.db`` keep their data."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import apsw
import pytest
from click.testing import CliRunner, Result

from gguf_embed.cli import cli
from gguf_embed.errors import IndexFileError
from gguf_embed.index import Index
from gguf_embed.store_guard import BESIDE
from gguf_embed.testing import FakeEngine

SUFFIXES = list(BESIDE)


def run(*args: str) -> Result:
    return CliRunner().invoke(cli, list(args))


def build(db: Path, folder: Path, *names: str) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for name in names:
        (folder / name).write_text(f"the {name} archive note\n")
    with Index(db, FakeEngine()) as index:
        index.add([folder])
    return db


def documents(db: Path) -> list[str]:
    conn = apsw.Connection(str(db), flags=apsw.SQLITE_OPEN_READONLY)
    try:
        return sorted(os.path.basename(r[0]) for r in conn.execute("SELECT path FROM documents"))
    finally:
        conn.close()


def test_merge_into_a_wal_name_is_refused_and_the_next_write_keeps_both(
        tmp_path: Path) -> None:
    """The probe: `merge m1.db-wal r.db` wrote an index at m1.db-wal, and the next write to
    m1.db deleted it (SQLite read it as m1.db's log)."""
    m1 = build(tmp_path / "m1.db", tmp_path / "a", "a.md")
    shard = build(tmp_path / "r.db", tmp_path / "r", "r.md")
    before = (m1.read_bytes(), shard.read_bytes())
    wal = tmp_path / "m1.db-wal"
    result = run("merge", str(wal), str(shard))
    assert result.exit_code == 1, result.stderr
    assert result.stderr.startswith("Error: ") and result.stderr.count("\n") == 1
    assert "m1.db-wal" in result.stderr and "write-ahead log" in result.stderr
    assert not wal.exists() and not Path(f"{wal}.lock").exists()
    assert (m1.read_bytes(), shard.read_bytes()) == before
    build(m1, tmp_path / "more", "x.md")  # the next write to m1.db
    assert documents(m1) == ["a.md", "x.md"] and documents(shard) == ["r.md"]


@pytest.mark.parametrize("readonly", [False, True])
@pytest.mark.parametrize("suffix", [*SUFFIXES, "-WAL"])
def test_an_index_named_like_a_side_file_is_refused(tmp_path: Path, suffix: str,
                                                    readonly: bool) -> None:
    real = build(tmp_path / "x.db", tmp_path / "docs", "a.md")
    before = real.read_bytes()
    side = Path(f"{real}{suffix}")
    existed = side.exists()
    with pytest.raises(IndexFileError, match="as an index") as info:
        Index(side, FakeEngine(), readonly=readonly).close()
    assert f"x.db{suffix}" in str(info.value) and "\n" not in str(info.value)
    assert side.exists() == existed and not Path(f"{side}.lock").exists()
    assert real.read_bytes() == before and documents(real) == ["a.md"]


def test_the_name_is_checked_where_a_link_points(tmp_path: Path) -> None:
    real = build(tmp_path / "x.db", tmp_path / "docs", "a.md")
    link = tmp_path / "innocent.db"
    link.symlink_to(tmp_path / "x.db-wal")
    with pytest.raises(IndexFileError, match=r"x\.db-wal"):
        Index(link, FakeEngine()).close()
    assert not (tmp_path / "x.db-wal").exists() and documents(real) == ["a.md"]


@pytest.mark.parametrize("new", [False, True])
@pytest.mark.parametrize("suffix", SUFFIXES)
def test_an_index_beside_another_as_its_side_file_is_never_written_over(
        tmp_path: Path, suffix: str, new: bool) -> None:
    """An index already at X.db-wal (or X.db.lock, X.db.bits, ...: made by hand or by an
    older version): opening X.db, new or not, is refused and that index keeps its data."""
    other = build(tmp_path / "other.db", tmp_path / "o", "o.md")
    real = tmp_path / "x.db"
    if not new:
        build(real, tmp_path / "docs", "a.md")
        Path(f"{real}-wal").unlink(missing_ok=True)
    planted = Path(f"{real}{suffix}")
    shutil.copy(other, planted)
    before = planted.read_bytes()
    for readonly in ([False] if new else [False, True]):
        with pytest.raises(IndexFileError, match="is an SQLite database") as info, \
                Index(real, FakeEngine(), readonly=readonly) as index:
            index.add([tmp_path / "o"])
        assert f"x.db{suffix}" in str(info.value) and "\n" not in str(info.value)
    assert planted.read_bytes() == before and documents(planted) == ["o.md"]
    assert real.exists() != new
    planted.unlink()  # SQLite itself would take a planted -journal for a hot journal
    if not new:
        assert documents(real) == ["a.md"]


def test_a_shard_named_like_a_side_file_is_refused(tmp_path: Path) -> None:
    shard = build(tmp_path / "s.db", tmp_path / "s", "s.md")
    renamed = tmp_path / "s.db.keywords"
    shard.rename(renamed)
    out = tmp_path / "out.db"
    result = run("merge", str(out), str(renamed))
    assert result.exit_code == 1 and "s.db.keywords" in result.stderr, result.stderr
    assert not out.exists() and documents(renamed) == ["s.md"]


def test_ordinary_names_still_work(tmp_path: Path) -> None:
    for name in ("wal", "x-wal.db", "x.lock.db", "bits", "x.keywords.db", "my-journal.sqlite"):
        build(tmp_path / name, tmp_path / "docs", "a.md")
        assert documents(tmp_path / name) == ["a.md"]
