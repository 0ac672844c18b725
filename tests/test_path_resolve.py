"""``--path`` given as a plain path resolved the way a user means it: a path no longer on disk
(the index still holds its documents) is that file or that folder; ``.`` and ``..`` in a glob;
a symlink to an indexed folder, and a folder indexed through a symlink."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest
from click.testing import CliRunner

from gguf_embed.cli import cli
from gguf_embed.index import Index
from gguf_embed.testing import FakeEngine

TEXT = "logs of the day\n"
FILES = ("c/a.md", "c/notes/logs.md", "c/notes/sub/b.md", "c/notes-old/x.md", "c/notes.md",
         "c/other/notes/y.md")


def make(base: Path, *roots: str) -> None:
    for name in FILES:
        (base / name).parent.mkdir(parents=True, exist_ok=True)
        (base / name).write_text(TEXT)
    with Index(base / "i.db", FakeEngine()) as index:
        index.add([base / r for r in roots or ("c",)])


@pytest.fixture
def tree(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The index ``i.db`` of ``c/``, with the current folder at its parent."""
    make(tmp_path)
    monkeypatch.chdir(tmp_path)
    return tmp_path


def found(base: Path, path: str, mode: str = "keyword") -> set[str]:
    with Index(base / "i.db", FakeEngine(), readonly=True) as index:
        return {os.path.relpath(h.path, base)
                for h in index.search("logs", k=50, mode=mode, path=path)}


@pytest.mark.parametrize("mode", ["keyword", "vector", "hybrid"])
def test_a_deleted_folder_is_still_a_folder(tree: Path, mode: str) -> None:
    shutil.rmtree(tree / "c" / "notes")
    notes = {"c/notes/logs.md", "c/notes/sub/b.md"}
    # taken as the exact file c/notes, it matched nothing unless written c/notes/
    assert found(tree, "c/notes", mode) == notes
    assert found(tree, "c/notes/", mode) == notes
    assert found(tree, str(tree / "c" / "notes"), mode) == notes
    assert found(tree, "c/notes/sub", mode) == {"c/notes/sub/b.md"}
    assert found(tree, "c/notes/logs.md", mode) == {"c/notes/logs.md"}  # a deleted file
    assert found(tree, "c/notes/logs.md/", mode) == set()  # a folder it is not


def test_a_deleted_path_is_never_its_longer_named_siblings(tree: Path) -> None:
    (tree / "c" / "notes.md").unlink()
    shutil.rmtree(tree / "c" / "notes")
    assert found(tree, "c/notes.md") == {"c/notes.md"}
    assert found(tree, "c/note") == set()  # not c/notes*, not c/notes-old/
    assert found(tree, "c/notes") == {"c/notes/logs.md", "c/notes/sub/b.md"}


def test_cli_a_deleted_folder(tree: Path) -> None:
    shutil.rmtree(tree / "c" / "notes")
    out = CliRunner().invoke(cli, ["search", "logs", "--db", "i.db", "--mode", "keyword",
                                   "--path", "c/notes", "--json"])
    assert out.exit_code == 0, out.stderr
    assert '"path"' in out.stdout and str(tree / "c" / "notes" / "logs.md") in out.stdout
