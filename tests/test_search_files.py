"""Results per file by default (the best chunk's lines and snippet, the file's score), chunk rows
with ``--chunks`` / ``"group": "chunk"``, and the fusion helpers behind them."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from gguf_embed import fusion
from gguf_embed.chunking import ChunkSettings
from gguf_embed.cli import cli
from gguf_embed.errors import InputError
from gguf_embed.index import Index
from gguf_embed.testing import FakeEngine

FILLER = "unrelated words about gardens and weather and tea"


@pytest.fixture
def db(tmp_path: Path) -> Path:
    """long.md has many chunks that mention the query, its best one in the middle."""
    docs = tmp_path / "docs"
    docs.mkdir()
    lines = [f"{FILLER} {i}" if i % 4 else f"rotate logs now {i}" for i in range(60)]
    lines[30] = "rotate logs rotate logs with logrotate rotate logs daily"
    (docs / "long.md").write_text("\n".join(lines) + "\n", encoding="utf-8")
    (docs / "notes.md").write_text(f"{FILLER}\nrotate the logs once a week\n", encoding="utf-8")
    (docs / "other.md").write_text(f"{FILLER}\nlogs are kept for a month\n", encoding="utf-8")
    (docs / "far.md").write_text(f"{FILLER}\nnothing to see\n", encoding="utf-8")
    path = tmp_path / "i.db"
    with Index(path, FakeEngine(), chunking=ChunkSettings(max_tokens=40, overlap=0)) as index:
        index.add([docs])
        assert index.store.counts()["chunks"] > 8
    return path


def names(hits: list) -> list[str]:
    return [Path(h.path).name for h in hits]


@pytest.mark.parametrize("mode", ["hybrid", "keyword", "vector"])
def test_one_row_per_file_with_its_best_chunk(db: Path, mode: str) -> None:
    with Index(db, FakeEngine()) as index:
        chunks = index.search("rotate logs", k=50, mode=mode, group="chunk")
        files = index.search("rotate logs", k=3, mode=mode)
    assert names(chunks).count("long.md") > 3  # the old behaviour: one file fills the list
    assert len(files) == 3 and len(set(names(files))) == 3
    best = next(c for c in chunks if Path(c.path).name == "long.md")
    row = next(f for f in files if Path(f.path).name == "long.md")
    assert (row.start_line, row.end_line, row.snippet, row.chunk_id) == \
        (best.start_line, best.end_line, best.snippet, best.chunk_id)
    assert row.start_line <= 31 <= row.end_line  # the chunk holding the strongest line
    assert "logrotate" in row.snippet
    if mode != "hybrid":  # one list: a file's score is its best chunk's
        assert row.score == best.score
    assert [f.score for f in files] == sorted((f.score for f in files), reverse=True)


def test_k_counts_files_not_chunks(db: Path) -> None:
    with Index(db, FakeEngine()) as index:
        assert names(index.search("rotate logs", k=3, mode="keyword",
                                  group="chunk")).count("long.md") >= 2
        assert sorted(names(index.search("rotate logs", k=3, mode="keyword"))) == \
            ["long.md", "notes.md", "other.md"]
        with pytest.raises(InputError, match="group"):
            index.search("rotate logs", group="page")


def test_cli_rows_per_file_and_chunks(db: Path) -> None:
    runner = CliRunner()
    per_file = runner.invoke(cli, ["search", "rotate logs", "--db", str(db), "--mode",
                                   "keyword", "-k", "10", "--json"])
    assert per_file.exit_code == 0, per_file.output
    rows = json.loads(per_file.stdout)
    assert len(rows) == len({r["path"] for r in rows}) == 3
    human = runner.invoke(cli, ["search", "rotate logs", "--db", str(db), "--mode", "keyword"])
    assert human.exit_code == 0
    assert sum(1 for line in human.stdout.splitlines() if "long.md:" in line) == 1
    chunked = runner.invoke(cli, ["search", "rotate logs", "--db", str(db), "--mode",
                                  "keyword", "-k", "10", "--json", "--chunks"])
    assert chunked.exit_code == 0, chunked.output
    chunk_rows = json.loads(chunked.stdout)
    assert len(chunk_rows) == 10 and [Path(r["path"]).name for r in chunk_rows].count(
        "long.md") > 3


def test_http_group(db: Path) -> None:
    from starlette.testclient import TestClient

    from gguf_embed.server import ServerConfig, create_app

    app = create_app(FakeEngine(), ServerConfig(model_name="fake", index_path=str(db),
                                                batch_window=0))
    with TestClient(app, base_url="http://127.0.0.1:8000") as client:
        body = client.post("/v1/search", json={"query": "rotate logs", "k": 10}).json()
        paths = [r["path"] for r in body["data"]]  # hybrid: every file, once
        assert len(paths) == len(set(paths)) == 4
        body = client.post("/v1/search", json={"query": "rotate logs", "k": 10,
                                               "group": "chunk"}).json()
        assert [Path(r["path"]).name for r in body["data"]].count("long.md") > 3
        bad = client.post("/v1/search", json={"query": "rotate logs", "group": "files"})
        assert bad.status_code == 400
        assert bad.json()["error"]["param"] == "group"


def test_file_fusion_ranks_files_not_chunks() -> None:
    doc_of = {1: 10, 2: 10, 3: 10, 4: 20, 5: 30}
    vector = [(1, 0.9), (2, 0.8), (3, 0.7), (4, 0.6), (5, 0.1)]
    keyword = [(4, 9.0), (5, 5.0), (1, 1.0)]
    # per file: 10 is 1st then 3rd, 20 is 2nd then 1st, 30 is 3rd then 2nd
    fused = fusion.fuse_files([vector, keyword], doc_of, k=10)
    assert [d for d, _, _ in fused] == [20, 10, 30]
    assert fused[0][2] == pytest.approx(1 / 12 + 1 / 11)
    assert dict((d, c) for d, c, _ in fused)[10] == 1  # the chunk fusion ranks first in 10
    assert fusion.best_per_file(vector, doc_of) == [(10, 1, 0.9), (20, 4, 0.6), (30, 5, 0.1)]
