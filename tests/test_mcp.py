"""A real `gguf-embed mcp` subprocess driven by the MCP SDK's own client (stdio and HTTP)."""

from __future__ import annotations

import asyncio
import json
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from mcp import Client
from mcp.client.stdio import StdioServerParameters

from gguf_embed import Engine
from gguf_embed.index import Index

from .support.procs import interrupt
from .test_reranker import rerank_models  # noqa: F401  (fixture)

MAIN = "from gguf_embed.cli import main; import sys; sys.argv[0] = 'gguf-embed'; main()"
WAIT = 60.0

PAGES = {
    "tar.md": "# tar\n\n> Archiving utility.\n\n- Create an archive from files:\n\n"
              "`tar cf target.tar file1 file2`\n",
    "ssh.md": "# ssh\n\n> Secure Shell client.\n\n- Connect to a remote server:\n\n"
              "`ssh username@remote_host`\n",
    "logrotate.md": "# logrotate\n\n> Rotates, compresses and mails system logs.\n\n"
                    "- Rotate logs now:\n\n`logrotate --force /etc/logrotate.conf`\n",
}


@pytest.fixture(scope="module")
def indexed(tmp_path_factory: pytest.TempPathFactory, minilm_path: Path) -> tuple[Path, Path]:
    base = tmp_path_factory.mktemp("mcp")
    docs = base / "docs"
    docs.mkdir()
    for name, text in PAGES.items():
        (docs / name).write_text(text)
    long = "\n".join(["the same filler line"] * 2999 + ["line 3000 of a long file"])
    (docs / "long.txt").write_text(long + "\n")
    (base / "outside.txt").write_text("a secret outside the indexed folder\n")
    (docs / "escape.md").write_text("# escape\n\nsoon a symlink\n")
    db = base / "i.db"
    with Engine(minilm_path) as engine, Index(db, engine) as index:
        index.add([docs])
    os.remove(docs / "escape.md")  # now a link out of the indexed folder
    os.symlink(base / "outside.txt", docs / "escape.md")
    return docs, db


def stdio(db: Path, model: Path, *extra: str) -> Client:
    return Client(StdioServerParameters(
        command=sys.executable, args=["-c", MAIN, "mcp", "--db", str(db), "-m", str(model),
                                      *extra],
        env={**os.environ}), read_timeout_seconds=WAIT)


def text(result: Any) -> str:
    return result.content[0].text


def test_stdio_server(indexed: tuple[Path, Path], minilm_path: Path) -> None:
    """One server process (each start costs a model load): every tool, bad calls, then 20
    concurrent calls; the server outlives every error."""
    docs, db = indexed

    async def main() -> None:
        async with stdio(db, minilm_path) as client:
            await every_tool(client, docs)
            await bad_calls(client, docs)
            await twenty_concurrent_calls(client, docs)

    asyncio.run(main())


async def every_tool(client: Client, docs: Path) -> None:
    assert client.server_info is not None and client.server_info.name == "gguf-embed"
    tools = {t.name: t for t in (await client.list_tools()).tools}
    assert set(tools) == {"search", "get", "status"}
    for tool in tools.values():  # descriptions written for a model to read
        assert tool.description and len(tool.description) > 150
    assert set(tools["search"].input_schema["properties"]) == {
        "query", "k", "mode", "path", "rerank"}
    assert tools["search"].input_schema["required"] == ["query"]

    found = await client.call_tool("search", {"query": "how do I rotate my logs?",
                                              "k": 3})
    assert not found.is_error, text(found)
    hits = found.structured_content["results"]
    assert hits[0]["path"] == str(docs / "logrotate.md")
    assert len({h["path"] for h in hits}) == len(hits) <= 3  # one row per file
    assert {"path", "score", "start_line", "end_line", "snippet"} <= set(hits[0])
    assert json.loads(text(found))["results"][0]["path"] == hits[0]["path"]

    keyword = await client.call_tool("search", {"query": "username", "mode": "keyword",
                                                "path": str(docs)})
    assert keyword.structured_content["results"][0]["path"] == str(docs / "ssh.md")

    part = await client.call_tool("get", {"path": hits[0]["path"], "start_line": 3,
                                          "end_line": 3})
    assert part.structured_content["text"] == "> Rotates, compresses and mails system logs."
    whole = await client.call_tool("get", {"path": "tar.md"})  # relative to the root
    assert whole.structured_content["text"] == PAGES["tar.md"].rstrip("\n")
    long = await client.call_tool("get", {"path": str(docs / "long.txt")})
    data = long.structured_content
    assert data["truncated"] and data["end_line"] == 2000 and data["next_start_line"] \
        == 2001 and data["total_lines"] == 3000
    rest = await client.call_tool("get", {"path": str(docs / "long.txt"),
                                          "start_line": 2001})
    assert rest.structured_content["text"].splitlines()[-1] == "line 3000 of a long file"

    status = await client.call_tool("status", {})
    info = status.structured_content
    assert info["index"]["documents"] == 5 and info["watch"] is None
    assert info["index"]["roots"] == [str(docs)]


BAD_CALLS = [
    ("search", {"query": "logs", "k": "many"}, "k: Input should be a valid integer"),
    ("search", {"query": "logs", "k": 0}, "k: Input should be greater than or equal to 1"),
    ("search", {}, "query: Field required"),
    ("search", {"query": "   "}, "the query is empty"),
    ("search", {"query": "logs", "mode": "fuzzy"}, "mode must be one of hybrid"),
    ("search", {"query": "logs", "rerank": True}, "no reranker is loaded"),
    ("get", {"path": "/etc/passwd"}, "is not in the index"),
    ("get", {"path": "DOCS/../outside.txt"}, "contains '..'"),
    ("get", {"path": "DOCS/escape.md"}, "outside the indexed folders"),
    ("get", {"path": "DOCS/tar.md", "start_line": 50}, "start_line 50 is past the end"),
    ("get", {"path": "DOCS/tar.md", "start_line": 5, "end_line": 2}, "bad line range 5-2"),
    ("nonesuch", {}, "Unknown tool: nonesuch"),
]


async def bad_calls(client: Client, docs: Path) -> None:
    for name, args, message in BAD_CALLS:
        args = {k: v.replace("DOCS", str(docs)) if isinstance(v, str) else v
                for k, v in args.items()}
        result = await client.call_tool(name, args)
        assert result.is_error, (name, args)
        assert message in text(result), text(result)
        assert "\n" not in text(result)
    ok = await client.call_tool("search", {"query": "archive"})
    assert not ok.is_error
    assert ok.structured_content["results"][0]["path"] == str(docs / "tar.md")


async def twenty_concurrent_calls(client: Client, docs: Path) -> None:
    queries = ["archive files", "remote server login", "rotate logs"]
    want = [str(docs / n) for n in ("tar.md", "ssh.md", "logrotate.md")]

    calls = [client.call_tool("search", {"query": queries[i % 3], "k": 2})
             for i in range(18)]
    calls += [client.call_tool("status", {}), client.call_tool("get", {"path": want[0]})]
    results = await asyncio.gather(*calls)
    assert not any(r.is_error for r in results)
    for i, r in enumerate(results[:18]):
        assert r.structured_content["results"][0]["path"] == want[i % 3]


def test_search_reranks_with_the_servers_reranker(indexed: tuple[Path, Path], minilm_path: Path,
                                                 rerank_models: Path) -> None:  # noqa: F811
    """With --reranker, search reranks by default (rerank_score on each file's row), and
    rerank=false turns it off for one call; status names the reranker."""
    _, db = indexed
    reranker = rerank_models / "tiny-xlmr-reranker-f32.gguf"

    async def main() -> None:
        async with stdio(db, minilm_path, "--reranker", str(reranker)) as client:
            ranked = await client.call_tool("search", {"query": "archive files", "k": 3})
            assert not ranked.is_error, text(ranked)
            rows = ranked.structured_content["results"]
            assert rows and all("rerank_score" in row for row in rows)
            assert len({row["path"] for row in rows}) == len(rows)  # one row per file
            plain = await client.call_tool("search", {"query": "archive files", "k": 3,
                                                      "rerank": False})
            assert all("rerank_score" not in row for row in plain.structured_content["results"])
            info = (await client.call_tool("status", {})).structured_content
            assert info["reranker"]

    asyncio.run(main())


def test_unload_after_frees_the_model_and_the_next_call_loads_it(
        indexed: tuple[Path, Path], minilm_path: Path) -> None:
    _, db = indexed

    async def main() -> None:
        async with stdio(db, minilm_path, "--unload-after", "0.2") as client:
            first = await client.call_tool("search", {"query": "archive files", "k": 1})
            deadline = time.monotonic() + WAIT
            while (await client.call_tool("status", {})).structured_content["model_loaded"]:
                assert time.monotonic() < deadline, "the model was never unloaded"
                await asyncio.sleep(0.1)
            again = await client.call_tool("search", {"query": "archive files", "k": 1})
            assert not again.is_error, text(again)
            assert again.structured_content == first.structured_content

    asyncio.run(main())


def test_swapped_roles_are_a_clear_error(indexed: tuple[Path, Path], minilm_path: Path,
                                        rerank_models: Path) -> None:  # noqa: F811
    _, db = indexed
    out = subprocess.run([sys.executable, "-c", MAIN, "mcp", "--db", str(db), "-m",
                          "bge-reranker-base", "--reranker", "all-minilm-l6-v2"],
                         capture_output=True, text=True, timeout=WAIT)
    assert out.returncode == 1
    assert out.stderr.startswith("Error: ") and out.stderr.count("\n") == 1, out.stderr
    assert "bge-reranker-base" in out.stderr and "all-minilm-l6-v2" in out.stderr
    assert out.stdout == ""


def test_mcp_watch_keeps_the_index_live(tmp_path: Path, minilm_path: Path) -> None:
    docs = tmp_path / "live"
    docs.mkdir()
    (docs / "a.md").write_text("# Alpacas\n\nAlpacas are kept for their fibre.\n")
    db = tmp_path / "live.db"  # does not exist yet: the catch-up builds it

    async def main() -> None:
        async with stdio(db, minilm_path, "--watch", str(docs)) as client:
            await until(client, lambda s: s["watch"]["caught_up"])
            (docs / "b.md").write_text("# Capybaras\n\nThe largest living rodents.\n")

            async def found() -> bool:
                r = await client.call_tool("search", {"query": "capybaras", "mode": "keyword"})
                return not r.is_error and any(
                    h["path"] == str(docs / "b.md") for h in r.structured_content["results"])

            deadline = time.monotonic() + WAIT
            while not await found():
                assert time.monotonic() < deadline, "the new file never became searchable"
                await asyncio.sleep(0.2)
            status = (await client.call_tool("status", {})).structured_content
            assert status["watch"]["batches"] >= 1 and status["watch"]["paths"] == [str(docs)]

    asyncio.run(main())


async def until(client: Client, check: Any) -> None:
    deadline = time.monotonic() + WAIT
    while True:
        status = (await client.call_tool("status", {})).structured_content
        if check(status):
            return
        assert time.monotonic() < deadline, status
        await asyncio.sleep(0.2)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture()
def http_server(indexed: tuple[Path, Path], minilm_path: Path) -> Iterator[str]:
    _, db = indexed
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-c", MAIN, "mcp", "--db", str(db), "-m",
                             str(minilm_path), "--http", "--port", str(port), "--api-key",
                             "sekrit"], stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    url = f"http://127.0.0.1:{port}/mcp"
    deadline = time.monotonic() + WAIT
    try:
        while True:
            try:
                httpx.get(url, timeout=2)
                break
            except httpx.HTTPError:
                assert proc.poll() is None, proc.stderr.read() if proc.stderr else ""
                assert time.monotonic() < deadline, "the HTTP server did not start"
                time.sleep(0.1)
        yield url
    finally:
        interrupt(proc, WAIT)


def test_http_transport_with_key_and_guard(http_server: str,
                                           indexed: tuple[Path, Path]) -> None:
    import httpx2
    from mcp.client.streamable_http import streamable_http_client

    docs, _ = indexed

    async def main() -> None:
        async with httpx2.AsyncClient(headers={"Authorization": "Bearer sekrit"},
                                      timeout=WAIT) as http, \
                Client(streamable_http_client(http_server, http_client=http)) as client:
            assert {t.name for t in (await client.list_tools()).tools} == {
                "search", "get", "status"}
            r = await client.call_tool("search", {"query": "secure shell connection"})
            assert r.structured_content["results"][0]["path"] == str(docs / "ssh.md")
            bad = await client.call_tool("get", {"path": "/etc/hostname"})
            assert bad.is_error and "is not in the index" in text(bad)
            bad = await client.call_tool("search", {"query": "x", "k": "many"})
            assert bad.is_error and "k: Input should be a valid integer" in text(bad)
            part = await client.call_tool("get", {"path": str(docs / "ssh.md"), "start_line": 1,
                                                  "end_line": 1})
            assert part.structured_content["text"] == "# ssh"
            status = await client.call_tool("status", {})
            assert status.structured_content["index"]["documents"] == 5
            results = await asyncio.gather(*[
                client.call_tool("search", {"query": "archive", "k": 1}) for _ in range(20)])
            assert all(x.structured_content["results"][0]["path"] == str(docs / "tar.md")
                       for x in results)

    asyncio.run(main())
    body = {"jsonrpc": "2.0", "id": 1, "method": "tools/list"}
    assert httpx.post(http_server, json=body).status_code == 401
    assert httpx.post(http_server, json=body, headers={
        "Authorization": "Bearer wrong"}).status_code == 401
    evil = httpx.post(http_server, json=body, headers={
        "Authorization": "Bearer sekrit", "Host": "evil.example:80"})
    assert evil.status_code == 403 and evil.json()["error"]["code"] == "forbidden_host"
    cross = httpx.post(http_server, json=body, headers={
        "Authorization": "Bearer sekrit", "Origin": "https://evil.example"})
    assert cross.status_code == 403 and cross.json()["error"]["code"] == "forbidden_origin"
