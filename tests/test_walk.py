"""Ignore-file precedence as git applies it."""

from __future__ import annotations

from pathlib import Path

from gguf_embed.walk import Found, walk


def found(root: Path) -> set[str]:
    return {f.path.relative_to(root).as_posix() for f in walk([root]) if isinstance(f, Found)}


def test_nested_ignore_files_follow_git_precedence(tmp_path: Path) -> None:
    for name in ("a.log", "keep.log", "sub/a.log", "sub/keep.log", "sub/deep/keep.log",
                 "build/out.txt", "sub/build/out.txt", "vendor/x.md", "vendor/x/keep.log"):
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text(name)
    (tmp_path / ".gitignore").write_text("*.log\nbuild/\nvendor/\n")
    (tmp_path / "sub" / ".gitignore").write_text("!keep.log\n!build/\n")
    (tmp_path / "sub" / "deep" / ".ggufembedignore").write_text("keep.log\n")
    (tmp_path / "vendor" / ".gitignore").write_text("!*\n")  # inside an ignored folder: unseen

    assert found(tmp_path) - {".gitignore", "sub/.gitignore", "sub/deep/.ggufembedignore"} == {
        "sub/keep.log",       # a deeper negation re-includes what the parent ignored
        "sub/build/out.txt",  # ... folders too
    }


def test_ggufembedignore_overrides_gitignore_in_one_folder(tmp_path: Path) -> None:
    (tmp_path / "notes.log").write_text("x")
    (tmp_path / "debug.md").write_text("x")
    (tmp_path / ".gitignore").write_text("*.log\n")
    (tmp_path / ".ggufembedignore").write_text("!notes.log\ndebug.md\n")
    assert found(tmp_path) == {".gitignore", ".ggufembedignore", "notes.log"}
