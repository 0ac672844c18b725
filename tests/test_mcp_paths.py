"""From an agent's side (the MCP SDK's client, in-process, fake embedder): a path means the
same file or folder in ``search``'s ``path`` filter and in ``get``: absolute as search returns
it, or relative to an indexed folder, never to the server's current folder (which the agent
cannot know); a relative path two indexed folders hold is refused by both, naming both,
rather than one of them read silently; and every path search returns reads that very file."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest
from mcp import Client

from gguf_embed.index import Index
from gguf_embed.mcp_server import Service, create_server
from gguf_embed.testing import FakeEngine

FILES = {
    "notes/ops/logrotate.md": "the archive notes on rotating logs",
    "notes/a.md": "the archive note a",
    "notes/[draft] plan.md": "the archive draft plan",
    "notes/deep/x/y.md": "the archive deep y",
    "work/ops/logrotate.md": "the archive work config for logrotate",
    "work/b.md": "the archive work b",
}


@pytest.fixture
def base(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Two indexed folders, ``notes`` and ``work``; the server runs in ``elsewhere``, which
    holds files of the same relative names that are not indexed."""
    for name, text in FILES.items():
        for root in (tmp_path, tmp_path / "elsewhere"):
            (root / name).parent.mkdir(parents=True, exist_ok=True)
            (root / name).write_text(text + ("" if root == tmp_path else " NOT INDEXED") + "\n")
    for name in ("a.md", "ops/logrotate.md"):  # as the server's current folder sees them
        (tmp_path / "elsewhere" / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / "elsewhere" / name).write_text("not indexed\n")
    with Index(tmp_path / "i.db", FakeEngine()) as index:
        index.add([tmp_path / "notes", tmp_path / "work"])
    monkeypatch.chdir(tmp_path / "elsewhere")
    return tmp_path


def call(base: Path, calls: list[tuple[str, dict[str, Any]]]) -> list[Any]:
    async def main() -> list[Any]:
        server = create_server(Service(FakeEngine(), base / "i.db"))
        async with Client(server) as client:
            return [await client.call_tool(name, args) for name, args in calls]
    return asyncio.run(main())


def paths(result: Any) -> set[str]:
    assert not result.is_error, result.content[0].text
    return {h["path"] for h in result.structured_content["results"]}


def test_every_path_search_returns_reads_that_file(base: Path) -> None:
    filters: list[str | None] = [None, "ops/*.md", "*.md", "**/y.md", "deep/", "a.md"]
    found = call(base, [("search", {"query": "archive", "mode": "keyword", "k": 50,
                                    **({"path": f} if f else {})}) for f in filters])
    listed = set().union(*(paths(r) for r in found))
    assert listed == {str(base / n) for n in FILES}
    reads = call(base, [("get", {"path": p}) for p in sorted(listed)])
    for path, read in zip(sorted(listed), reads, strict=True):
        assert not read.is_error, read.content[0].text
        assert read.structured_content["path"] == path
        assert read.structured_content["text"] == FILES[str(Path(path).relative_to(base))]


def test_a_relative_path_means_the_same_in_search_and_get(base: Path) -> None:
    # search took "a.md" and "deep/x/" from the server's current folder (which holds an
    # a.md of its own) and found nothing; get read them under the indexed folder
    cases = [("a.md", "notes/a.md"), ("./a.md", "notes/a.md"), ("b.md", "work/b.md"),
             ("[draft] plan.md", "notes/[draft] plan.md"), ("deep/x/y.md", "notes/deep/x/y.md")]
    searched = call(base, [("search", {"query": "archive", "mode": "keyword",
                                       "path": rel}) for rel, _ in cases])
    read = call(base, [("get", {"path": rel}) for rel, _ in cases])
    for (rel, name), hits, got in zip(cases, searched, read, strict=True):
        assert paths(hits) == {str(base / name)}, rel
        assert not got.is_error, got.content[0].text
        assert got.structured_content["path"] == str(base / name), rel
    folder = call(base, [("search", {"query": "archive", "mode": "keyword", "path": "deep/"}),
                         ("search", {"query": "archive", "mode": "keyword", "path": "deep"})])
    assert [paths(r) for r in folder] == [{str(base / "notes/deep/x/y.md")}] * 2


def test_a_relative_path_two_folders_hold_is_refused_by_both_tools(base: Path) -> None:
    # get read notes/ops/logrotate.md, the first root's, when the agent may have meant work's
    for rel in ("ops/logrotate.md", "ops", "ops/"):
        results = call(base, [("get", {"path": rel}),
                              ("search", {"query": "archive", "path": rel})])
        for result in results[1 if rel != "ops/logrotate.md" else 0:]:
            assert result.is_error, rel
            message = result.content[0].text
            assert "\n" not in message
            assert str(base / "notes/ops") in message and str(base / "work/ops") in message
            assert "absolute" in message
    both = call(base, [("search", {"query": "archive", "mode": "keyword",
                                   "path": "ops/*.md"})])[0]
    assert paths(both) == {str(base / "notes/ops/logrotate.md"),
                           str(base / "work/ops/logrotate.md")}


def test_dots_and_bad_globs_stay_refused(base: Path) -> None:
    results = call(base, [("search", {"query": "archive", "path": "../notes/*.md"}),
                          ("get", {"path": "ops/../a.md"}),
                          ("search", {"query": "archive", "path": "[a-"}),
                          ("search", {"query": "archive", "path": ""})])
    messages = [r.content[0].text for r in results]
    assert all(r.is_error for r in results), messages
    assert "contains '..'" in messages[0] and "contains '..'" in messages[1]
    assert "'[a-'" in messages[2] and "no ] closes" in messages[2]
    assert "empty" in messages[3]
