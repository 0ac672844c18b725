"""Errors quote at most a bounded part of what a caller sent (issue 18): a 5 MB path given to
MCP `get` is not echoed back whole."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from gguf_embed.errors import InputError, capped, quoted
from gguf_embed.index import Index
from gguf_embed.testing import FakeEngine

pytest.importorskip("mcp")


def test_quoted_keeps_short_input_and_elides_the_middle_of_long_input() -> None:
    assert quoted("notes/a.md") == "notes/a.md"
    long = "a" * 1_000 + "MIDDLE" + "z" * 1_000
    short = quoted(long)
    assert len(short) <= 200 and short.startswith("aaa") and short.endswith("zzz")
    assert "MIDDLE" not in short and "1,8" in short  # says how much was left out
    assert len(capped("x" * 100_000)) <= 2_000


@pytest.fixture()
def service(tmp_path: Path):  # type: ignore[no-untyped-def]
    from gguf_embed.mcp_server import Service

    docs = tmp_path / "docs"
    docs.mkdir()
    (docs / "a.md").write_text("# A\n\nOtters.\n")
    db = tmp_path / "i.db"
    engine = FakeEngine()
    with Index(db, engine) as index:
        index.add([docs])
    return Service(engine, db)


@pytest.mark.parametrize("path", ["/" + "x" * 5_000_000, "x" * 5_000_000,
                                  "../" * 1_000_000 + "etc/passwd"])
def test_mcp_get_with_a_huge_path_quotes_a_bounded_part(service, path: str) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(InputError) as info:
        service.get(path)
    assert len(str(info.value)) < 500


def test_the_mcp_tool_error_for_a_huge_path_is_bounded(service) -> None:  # type: ignore[no-untyped-def]
    from mcp.server.mcpserver.exceptions import ToolError

    from gguf_embed.mcp_server import create_server

    server = create_server(service)
    with pytest.raises(ToolError) as info:
        asyncio.run(server.call_tool("get", {"path": "/" + "y" * 5_000_000}))
    assert len(str(info.value)) < 2_100 and "not in the index" in str(info.value)
