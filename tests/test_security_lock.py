"""The write lock from the attacker's side: whoever can write the index's folder can plant a
symlink, a hard link or a fifo at ``INDEX.lock``.  None of them may get a user's file truncated
or written, or hang the run: the command refuses with one line, and the victim is unchanged."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from gguf_embed import Index
from gguf_embed.errors import IndexFileError
from gguf_embed.testing import FakeEngine

PRECIOUS = "my thesis, years of work\n" * 100


@pytest.fixture
def victim(tmp_path: Path) -> Path:
    file = tmp_path / "home" / "thesis.txt"
    file.parent.mkdir()
    file.write_text(PRECIOUS)
    return file


def run_index(db: Path, docs: Path, model: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "gguf_embed", "index", str(docs), "--db", str(db), "-m",
         str(model)], capture_output=True, text=True, timeout=120,
        env={**os.environ, "PYTHONPATH": str(Path(__file__).parent.parent)})


def test_a_symlink_at_the_lock_path_is_refused_and_its_target_untouched(
        tmp_path: Path, victim: Path, minilm_path: Path) -> None:
    docs = tmp_path / "docs"
    docs.mkdir()
    (docs / "a.md").write_text("# a\n\nsome text\n")
    common = tmp_path / "common"
    common.mkdir()
    db = common / "index.db"
    Path(str(db) + ".lock").symlink_to(victim)
    done = run_index(db, docs, minilm_path)
    assert done.returncode == 1, done.stderr
    assert done.stdout == ""
    error = done.stderr.strip().splitlines()
    assert len(error) == 1 and error[0].startswith("Error: ")
    assert "lock file" in error[0] and "symbolic link" in error[0]
    assert victim.read_text() == PRECIOUS
    assert os.path.islink(str(db) + ".lock")  # left for the user to look at
    assert not db.exists()


def test_a_hard_link_or_fifo_at_the_lock_path_is_refused(tmp_path: Path, victim: Path) -> None:
    db = tmp_path / "index.db"
    lock = Path(str(db) + ".lock")
    os.link(victim, lock)
    with pytest.raises(IndexFileError, match="hard links"):
        Index(db, FakeEngine())
    assert victim.read_text() == PRECIOUS
    lock.unlink()
    os.mkfifo(lock)  # opening a fifo for reading could wait forever
    with pytest.raises(IndexFileError, match="not a regular file"):
        Index(db, FakeEngine())


def test_a_leftover_lock_file_is_reused(tmp_path: Path) -> None:
    db = tmp_path / "index.db"
    lock = Path(str(db) + ".lock")
    lock.write_text("12345\n")  # left by a killed run
    with Index(db, FakeEngine()):
        assert lock.read_text() == f"{os.getpid()}\n"
    assert not lock.exists()


@pytest.mark.skipif(not hasattr(os, "geteuid") or os.geteuid() != 0,
                    reason="needs root to make a file owned by another user")
def test_another_users_file_at_the_lock_path_is_locked_but_never_written(
        tmp_path: Path) -> None:
    db = tmp_path / "index.db"
    lock = Path(str(db) + ".lock")
    lock.write_text("not yours\n")
    os.chown(lock, 65534, 65534)
    with Index(db, FakeEngine()):
        assert lock.read_text() == "not yours\n"
