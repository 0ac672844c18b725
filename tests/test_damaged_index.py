"""A damaged index file (pages overwritten inside it, its header intact; or its header): every
surface says so in one line naming the file and what to do (library: IndexDamaged; CLI:
``Error: ...``, exit 1; HTTP: the OpenAI envelope), never a traceback, and nothing is written
to the damaged file.  Merge: a damaged shard is named, the output is left as it was (or not
made), and a damaged output is named as the output."""

from __future__ import annotations

import asyncio
import hashlib
import shutil
from pathlib import Path

import apsw
import pytest
from click.testing import CliRunner
from starlette.testclient import TestClient

from gguf_embed import Engine, IndexFileError
from gguf_embed.cli import cli
from gguf_embed.errors import IndexDamaged
from gguf_embed.index import Index
from gguf_embed.server import ServerConfig, create_app
from gguf_embed.testing import FakeEngine

from .test_bad_input import write_docs
from .test_bad_input_cli import one_line_error

TOPICS = ["espresso and croissant", "green tea ceremony", "rotating log files with logrotate",
          "kernel modules and drivers", "tar archives and gzip", "ssh keys and agents"]


def texts(prefix: str, count: int = 24) -> dict[str, str]:
    return {f"{prefix}{i:02d}.md": f"# {TOPICS[i % len(TOPICS)]} {i}\n\n"
            f"{TOPICS[(i + 1) % len(TOPICS)]}, note {prefix}{i}.\n" for i in range(count)}


def build(db: Path, docs: Path, engine: object) -> Path:
    with Index(db, engine) as index:  # type: ignore[arg-type]
        assert not index.add([docs]).failed
    checkpoint(db)
    return db


def checkpoint(db: Path) -> None:
    """Every committed page in the main file (the damage goes there, as on a disk)."""
    conn = apsw.Connection(str(db))
    conn.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchall()
    conn.close()
    assert not Path(f"{db}-wal").exists() or Path(f"{db}-wal").stat().st_size == 0


def damage(db: Path, table: str) -> list[int]:
    """Overwrite every page of ``table`` (its b-tree: root, interior and leaf pages) with a
    pattern SQLite cannot read as a page; the file's header and other tables stay intact."""
    conn = apsw.Connection(str(db), flags=apsw.SQLITE_OPEN_READONLY)
    (size,), = conn.execute("PRAGMA page_size")
    pages = [int(r[0]) for r in conn.execute(
        "SELECT pageno FROM dbstat WHERE name = ? ORDER BY pageno", (table,))]
    conn.close()
    assert pages and 1 not in pages
    with open(db, "r+b") as f:
        for page in pages:
            f.seek((page - 1) * size)
            f.write(b"\xde\xad" * (size // 2))
    return pages


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture(scope="module")
def good(tmp_path_factory: pytest.TempPathFactory, qwen: Engine) -> Path:
    root = tmp_path_factory.mktemp("damaged")
    return build(root / "good.db", write_docs(root / "docs", texts("n")), qwen)


@pytest.fixture
def vectors_damaged(good: Path, tmp_path: Path) -> Path:
    db = tmp_path / "cor.db"
    shutil.copy(good, db)
    damage(db, "chunk_vectors")
    return db


def test_vector_search_of_a_damaged_index_raises_index_damaged(vectors_damaged: Path,
                                                               qwen: Engine) -> None:
    before = digest(vectors_damaged)
    with Index(vectors_damaged, qwen, readonly=True) as index:
        for mode in ("vector", "hybrid"):
            with pytest.raises(IndexDamaged, match="is damaged") as info:
                index.search("log files", mode=mode)
            assert info.value.path == str(vectors_damaged)
            assert str(vectors_damaged) in str(info.value)
            assert "backup" in str(info.value) and ".recover" in str(info.value)
        # the pages of the other tables are whole: keyword search and status still work
        assert index.search("logrotate", mode="keyword")
        assert index.status()["documents"] == 24
    assert digest(vectors_damaged) == before  # nothing written to it


def test_adding_to_a_damaged_index_raises_index_damaged(vectors_damaged: Path, qwen: Engine,
                                                        tmp_path: Path) -> None:
    docs = write_docs(tmp_path / "more", texts("m", 3))
    with Index(vectors_damaged, qwen) as index:
        with pytest.raises(IndexDamaged, match="nothing more is written"):
            index.add([docs])
        assert index.status()["documents"] == 24  # the document being added was rolled back


def test_cli_search_of_a_damaged_index_is_one_line(vectors_damaged: Path,
                                                   qwen_path: Path) -> None:
    before = digest(vectors_damaged)
    result = CliRunner().invoke(cli, ["search", "--db", str(vectors_damaged), "-m",
                                      str(qwen_path), "log files"])
    one_line_error(result, "is damaged", str(vectors_damaged), "backup")
    assert result.stdout == ""
    result = CliRunner().invoke(cli, ["search", "--db", str(vectors_damaged), "-m",
                                      str(qwen_path), "--mode", "keyword", "logrotate"])
    assert result.exit_code == 0 and "n02.md" in result.stdout
    assert digest(vectors_damaged) == before


def test_the_server_answers_a_damaged_index_with_the_error_envelope(vectors_damaged: Path,
                                                                    qwen: Engine) -> None:
    config = ServerConfig(model_name="tiny-qwen3", index_path=str(vectors_damaged),
                          batch_window=0)
    client = TestClient(create_app(qwen, config), base_url="http://127.0.0.1:8000",
                        raise_server_exceptions=False)
    response = client.post("/v1/search", json={"query": "log files", "mode": "vector"})
    assert response.status_code == 500
    error = response.json()["error"]
    assert error["code"] == "index_damaged" and "is damaged" in error["message"]
    ok = client.post("/v1/search", json={"query": "logrotate", "mode": "keyword"})
    assert ok.status_code == 200 and ok.json()


def test_the_mcp_search_tool_reports_a_damaged_index_as_one_line(vectors_damaged: Path,
                                                                   qwen: Engine) -> None:
    from mcp.server.mcpserver.exceptions import ToolError

    from gguf_embed.mcp_server import Service, create_server

    server = create_server(Service(qwen, vectors_damaged))
    with pytest.raises(ToolError, match="is damaged") as info:
        asyncio.run(server.call_tool("search", {"query": "log files", "mode": "vector"}))
    assert "\n" not in str(info.value) and str(vectors_damaged) in str(info.value)


def test_a_damaged_header_or_a_file_that_is_not_sqlite(good: Path, tmp_path: Path) -> None:
    header = tmp_path / "header.db"
    shutil.copy(good, header)
    with open(header, "r+b") as f:
        f.seek(16)  # the page size and what follows: SQLite refuses the file
        f.write(b"\xde\xad" * 40)
    with pytest.raises(IndexDamaged, match=r"header\.db is damaged"):
        Index(header, readonly=True)
    text = tmp_path / "notes.txt"
    text.write_text("not an index\n" * 500)
    with pytest.raises(IndexFileError, match="not a gguf-embed index") as info:
        Index(text, readonly=True)
    assert not isinstance(info.value, IndexDamaged)
    assert text.read_text() == "not an index\n" * 500


# ---------------------------------------------------------------- merge
@pytest.fixture(scope="module")
def shards(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Two good shards and one whose chunks table is damaged (its vectors are whole, so the
    checks before merging pass and the damage is met while copying)."""
    root = tmp_path_factory.mktemp("shards")
    out = {name: build(root / f"{name}.db", write_docs(root / name, texts(name[0], 12)),
                       FakeEngine()) for name in ("one", "two", "bad")}
    damage(out["bad"], "chunks")
    return out


def test_merging_a_damaged_shard_names_it_and_makes_no_output(vectors_damaged: Path,
                                                              tmp_path: Path) -> None:
    before = digest(vectors_damaged)
    out = tmp_path / "out.db"
    result = CliRunner().invoke(cli, ["merge", str(out), str(vectors_damaged)])
    one_line_error(result, f"shard {vectors_damaged} is damaged")
    assert not out.exists()  # nothing half made
    assert digest(vectors_damaged) == before


def test_a_shard_damaged_where_only_copying_reads_is_named_and_the_output_kept(
        shards: dict[str, Path], tmp_path: Path) -> None:
    out = tmp_path / "out.db"
    before = digest(shards["bad"])
    result = CliRunner().invoke(cli, ["merge", str(out), str(shards["one"]),
                                      str(shards["bad"])])
    assert result.exit_code == 1 and "Traceback" not in result.stderr
    *progress, error = result.stderr.splitlines()  # "merged one.db (1/2): ...", then
    assert len(progress) == 1 and error.startswith(f"Error: shard {shards['bad']} is damaged")
    assert digest(shards["bad"]) == before
    with Index(out, FakeEngine(), readonly=True) as index:  # valid, holding the first shard
        assert index.status()["documents"] == 12
        assert sorted(Path(p).name for p in index.store.documents()) == \
            [f"o{i:02d}.md" for i in range(12)]
        assert index.store.conn.execute("PRAGMA integrity_check").fetchall() == [("ok",)]


def test_merging_into_a_damaged_output_names_the_output(shards: dict[str, Path],
                                                        tmp_path: Path) -> None:
    out = tmp_path / "out.db"
    shutil.copy(shards["one"], out)
    damage(out, "chunks")
    with Index(out, FakeEngine()) as index, \
            pytest.raises(IndexDamaged, match=f"index {out} is damaged"):
        index.merge_from([shards["two"]])
    result = CliRunner().invoke(cli, ["merge", str(out), str(shards["two"])])
    one_line_error(result, f"index {out} is damaged")
