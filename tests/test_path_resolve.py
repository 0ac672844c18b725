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
from tests.support import path_tree

TEXT = "logs of the day\n"
FILES = ("c/a.md", "c/notes/logs.md", "c/notes/sub/b.md", "c/notes-old/x.md", "c/notes.md",
         "c/other/notes/y.md")


def make(base: Path, *roots: str) -> None:
    path_tree.make_index(base, FILES, TEXT, roots or ("c",))


@pytest.fixture
def tree(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The index ``i.db`` of ``c/``, with the current folder at its parent."""
    make(tmp_path)
    monkeypatch.chdir(tmp_path)
    return tmp_path


def found(base: Path, path: str, mode: str = "keyword") -> set[str]:
    return path_tree.found(base, path, mode, "logs")


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


NOTES = {"c/notes/logs.md", "c/notes/sub/b.md"}


@pytest.mark.parametrize("pattern", [
    "./c/notes/./*", "c/notes/../notes/*", "./c/../c/notes/*", "c/./notes/*", "c//notes/*",
    "c/other/../notes/*", "c/notes/sub/../*", "./c/notes/sub/../../notes/",
    "*/c/./notes/*", "c/notes/./",
])
def test_dot_segments_of_a_glob_are_resolved(tree: Path, pattern: str) -> None:
    # the dots stayed in the GLOB, which no stored (normalised) path matches
    assert found(tree, pattern) == NOTES
    if not pattern.startswith("*"):  # the same, absolute (pathlib would drop the dots)
        assert found(tree, f"{tree}/{pattern}", "vector") == NOTES


def test_dots_that_climb_above_a_relative_glob_start_from_the_current_folder(
        tree: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tree / "c" / "other")
    assert found(tree, "../notes/*") == NOTES
    assert found(tree, "x/../../notes/*") == NOTES  # normpath: ../notes/*
    assert found(tree, "./../notes/../notes-old/*") == {"c/notes-old/x.md"}
    monkeypatch.chdir(tree / "c" / "notes")
    assert found(tree, "./sub/../*.md") == NOTES  # * crosses /: sub/b.md too


@pytest.mark.parametrize("pattern", ["c/*/../notes/*", "*/../c/notes/*", "c/**/../*.md",
                                     "c/note?/../*"])
def test_dots_after_a_wildcard_folder_are_refused(tree: Path, pattern: str) -> None:
    from gguf_embed.errors import InputError

    with pytest.raises(InputError, match=r"--path.*'\.\.' after") as caught:
        found(tree, pattern)
    assert caught.value.param == "path" and "\n" not in str(caught.value)


def test_a_name_that_starts_with_dots_is_no_dot_segment(tree: Path) -> None:
    (tree / "c" / "..x").mkdir()
    (tree / "c" / "..x" / "d.md").write_text(TEXT)
    (tree / "c" / ".y").mkdir()
    (tree / "c" / ".y" / "e.md").write_text(TEXT)
    with Index(tree / "i.db", FakeEngine()) as index:
        index.add([tree / "c"])
    assert found(tree, "c/..x/*") == {"c/..x/d.md"}
    assert found(tree, "./c/.y/*") == {"c/.y/e.md"}
    assert found(tree, "c/.y/../..x/*.md") == {"c/..x/d.md"}


def test_a_symlink_to_an_indexed_folder_means_that_folder(tree: Path) -> None:
    os.symlink("c/notes", tree / "nl")
    os.symlink("notes/logs.md", tree / "c" / "ll.md")  # a link inside: its target is indexed
    for spelling in ("nl", "nl/", str(tree / "nl"), "./nl"):
        assert found(tree, spelling) == NOTES, spelling
    assert found(tree, "nl/sub", "vector") == {"c/notes/sub/b.md"}
    assert found(tree, "c/ll.md") == {"c/notes/logs.md"}


def test_a_folder_indexed_through_a_symlink_is_found_by_its_real_path(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    real = tmp_path / "real"
    real.mkdir()
    os.symlink(real, tmp_path / "link")
    make(tmp_path / "link", "c")  # stored as .../link/c/...
    monkeypatch.chdir(tmp_path)
    base = tmp_path / "link"
    assert found(base, "link/c/notes") == NOTES
    assert found(base, "real/c/notes") == NOTES  # matched nothing
    assert found(base, str(real / "c" / "notes" / "sub")) == {"c/notes/sub/b.md"}
    monkeypatch.chdir(real / "c")  # os.getcwd() is the real path
    assert found(base, "notes") == NOTES
    assert found(base, "notes/logs.md", "hybrid") == {"c/notes/logs.md"}
    shutil.rmtree(real / "c" / "notes")  # gone from disk, through the link or not
    assert found(base, "notes") == NOTES
    assert found(base, str(tmp_path / "link" / "c" / "notes")) == NOTES


def test_a_link_filter_never_widens_what_the_index_serves(tree: Path) -> None:
    # attacker's side: a link planted towards a secret folder outside the index, or to the
    # index's own folder by another name, only narrows; what is served stays inside the roots
    secret = tree / "secret"
    secret.mkdir()
    (secret / "key.md").write_text(TEXT)
    os.symlink(secret, tree / "c" / "notes" / "s")  # outside the roots: not followed
    with Index(tree / "i.db", FakeEngine()) as index:
        index.add([tree / "c"])
        every = {h.path for h in index.search("logs", k=50, mode="keyword")}
    assert not any("secret" in p or "/s/" in p for p in every)
    os.symlink(tree, tree / "c" / "up")  # a loop back above the root
    for spelling in ("c/notes/s", "secret", "c/up", "c/up/secret", "c/up/c", "/", tree.name):
        hits = found(tree, spelling)
        assert {str(tree / h) for h in hits} <= every, spelling
        assert not any("secret" in h for h in hits), spelling
    assert found(tree, "c/up/c/notes") == NOTES  # a real folder inside, named via the loop


def test_dot_star_is_the_current_folder_and_below_as_the_docs_say(
        tree: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # docs/searching.md: "./*.md" is not only the files beside you; * crosses /
    monkeypatch.chdir(tree / "c" / "notes")
    assert found(tree, "./*.md") == NOTES


def test_a_root_that_is_itself_a_symlink_is_found_by_its_target(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    make(tmp_path, "c/a.md")  # c/notes/ is indexed only through the link below
    os.symlink(tmp_path / "c" / "notes", tmp_path / "nl")
    with Index(tmp_path / "i.db", FakeEngine()) as index:
        index.add([tmp_path / "nl"])  # stored as .../nl/logs.md
    monkeypatch.chdir(tmp_path)
    assert found(tmp_path, "nl") == {"nl/logs.md", "nl/sub/b.md"}
    assert found(tmp_path, "c/notes") == {"nl/logs.md", "nl/sub/b.md"}
    assert found(tmp_path, "c/notes/sub/b.md") == {"nl/sub/b.md"}
    # c holds the folder indexed as nl/ (and the file indexed as itself)
    assert found(tmp_path, "c") == {"c/a.md", "nl/logs.md", "nl/sub/b.md"}
    assert found(tmp_path, "c/") == {"c/a.md", "nl/logs.md", "nl/sub/b.md"}


def test_roots_spelt_as_they_really_are_add_no_globs(tree: Path) -> None:
    from gguf_embed.index_paths import glob

    roots = [str(tree / name) for name in FILES] + [str(tree / "c")]
    assert glob("c", roots) == glob("c") == f"{tree}/c/*"  # not one GLOB per root under it
    assert glob("c/notes/logs.md", roots) == f"{tree}/c/notes/logs.md"


def test_a_glob_from_a_folder_reached_through_a_symlink(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    real = tmp_path / "real"
    real.mkdir()
    os.symlink(real, tmp_path / "link")
    base = tmp_path / "link"
    make(base, "c")  # stored as .../link/c/...
    os.symlink(real / "c" / "notes", real / "nl")
    monkeypatch.chdir(real / "c")  # os.getcwd() is .../real/c: "./" globs started there
    assert found(base, "./notes/*") == NOTES
    assert found(base, "./*/sub/*.md", "vector") == {"c/notes/sub/b.md"}
    assert found(base, "../nl/*.md") == NOTES  # a symlink to an indexed folder, as a folder
    assert found(base, f"{real}/c/notes/**/b.md") == {"c/notes/sub/b.md"}
    assert found(base, f"{base}/c/notes/*.md") == NOTES
    assert found(base, "./*.md") == {"c/a.md", "c/notes.md", *NOTES, "c/notes-old/x.md",
                                     "c/other/notes/y.md"}
    # a root really inside the glob's folder is no spelling of it: .../nl/*.md is not what
    # .../real/*.md means for the documents of the root nl (.../real/c/notes)
    from gguf_embed.index_paths import glob

    assert glob(f"{real}/*.md", [str(real / "nl")]) == f"{real}/*.md"
