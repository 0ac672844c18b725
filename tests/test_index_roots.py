"""Overlapping or repeated roots (``index c c/notes c``): each file is walked into the run
once, so it is embedded once and counted once in the summary, while a root inside another
keeps what naming it means (its own ignore rules and globs, a credential file named)."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from click.testing import CliRunner

from gguf_embed.cli import cli
from gguf_embed.index import Index
from gguf_embed.testing import FakeEngine

DOCS = ("a.md", "notes/logs.md", "notes/sub/b.md", "other/x.md")


@pytest.fixture
def tree(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    c = tmp_path / "c"
    for name in DOCS:
        (c / name).parent.mkdir(parents=True, exist_ok=True)
        (c / name).write_text(f"the notes of {name}\n")
    (c / "notes" / "broken.pdf").write_bytes(b"%PDF-1.4\n1 0 obj <<>> garbage")  # failed
    (c / "notes" / "bad.bin").write_bytes(b"\x00\x01" * 100)  # skipped
    (c / "notes" / ".env").write_text("TOKEN=x\n")  # skipped: credentials
    (c / "ign" / "z.md").parent.mkdir()
    (c / "ign" / "z.md").write_text("ignored by c's .gitignore\n")
    (c / ".gitignore").write_text("ign/\n.gitignore\n")
    monkeypatch.chdir(tmp_path)
    return tmp_path


def counts(summary: object) -> tuple[int, list[str], list[str]]:
    d = summary.to_dict()  # type: ignore[attr-defined]
    return (d["added"], sorted(os.path.basename(s["path"]) for s in d["skipped"]),
            sorted(os.path.basename(f["path"]) for f in d["failed"]))


@pytest.mark.parametrize("roots", [["c", "c/notes", "c"], ["c/notes", "c"], ["c", "./c/", "c"],
                                   ["c/notes/sub", "c/notes", "c", "c/notes/sub/b.md"]])
def test_each_file_is_counted_once(tree: Path, roots: list[str]) -> None:
    # "added 21 ... skipped 6, failed 2" for 10 documents: each root's walk counted again
    with Index(tree / "i.db", FakeEngine()) as index:
        summary = index.add(roots)
        assert counts(summary) == (len(DOCS), [".env", "bad.bin"], ["broken.pdf"])
        assert summary.chunks == len(DOCS)  # embedded once each
        assert len(index.store.documents()) == len(DOCS)
        again = index.add(roots)
        assert again.unchanged == len(DOCS) and counts(again) == (0, [".env", "bad.bin"],
                                                                  ["broken.pdf"])


def test_a_nested_root_keeps_what_naming_it_means(tree: Path) -> None:
    with Index(tree / "i.db", FakeEngine()) as index:
        summary = index.add(["c", "c/ign", "c/notes/.env", "c", "c/ign"])
        names = {os.path.relpath(p, tree / "c") for p in index.store.documents()}
    # c's .gitignore leaves ign/ out, but ign named is walked; .env named is indexed as asked
    assert names == {*DOCS, "ign/z.md", "notes/.env"}
    assert counts(summary) == (len(DOCS) + 2, ["bad.bin"], ["broken.pdf"])


def test_a_nested_root_keeps_its_own_excludes(tree: Path) -> None:
    with Index(tree / "i.db", FakeEngine()) as index:
        summary = index.add(["c", "c/notes"], exclude=["notes/"])  # relative to each root
        names = {os.path.relpath(p, tree / "c") for p in index.store.documents()}
    assert names == set(DOCS) and summary.added == len(DOCS)


def test_cli_summary(tree: Path, qwen_path: Path) -> None:
    out = CliRunner().invoke(cli, ["index", "c", "c/notes", "c", "--db", "ov.db", "-m",
                                   str(qwen_path), "--json"])
    assert out.exit_code == 0, out.stderr
    summary = json.loads(out.stdout)
    assert summary["added"] == len(DOCS)
    assert len(summary["skipped"]) == 2 and len(summary["failed"]) == 1


def test_a_missing_root_named_twice_is_named_once(tree: Path) -> None:
    from gguf_embed.errors import PathError

    with Index(tree / "i.db", FakeEngine()) as index, pytest.raises(PathError) as caught:
        index.add(["gone", "c", "./gone/", "gone"])
    assert str(caught.value).count("gone") == 1, caught.value
