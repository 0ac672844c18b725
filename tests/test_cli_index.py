"""index / search / status through the CLI with the real MiniLM GGUF on real tldr pages."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from click.testing import CliRunner

from gguf_embed.cli import cli


@pytest.fixture(scope="module")
def indexed(tmp_path_factory, corpora: Path, minilm_path: Path) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("cli")
    docs = root / "docs"
    docs.mkdir()
    for page in sorted((corpora / "tldr-linux" / "pages").glob("a*.md"))[:80]:
        shutil.copy(page, docs / page.name)
    (docs / "bad.bin").write_bytes(b"\x00\x01" * 100)
    db = root / "index.db"
    result = CliRunner().invoke(cli, ["index", str(docs), "--db", str(db), "-m",
                                      str(minilm_path), "--json"])
    assert result.exit_code == 0, result.stderr
    summary = json.loads(result.stdout)
    assert summary["added"] == 80 and summary["skipped"][0]["reason"] == "binary"
    assert summary["tokens_embedded"] > 0
    return db, docs


def test_search_json_fields(indexed: tuple[Path, Path]) -> None:
    db, docs = indexed
    page = sorted(docs.glob("*.md"))[10]
    desc = next(line[2:] for line in page.read_text().splitlines() if line.startswith("> "))
    result = CliRunner().invoke(cli, ["search", desc, "--db", str(db), "--json", "-k", "5"])
    assert result.exit_code == 0, result.stderr
    hits = json.loads(result.stdout)
    assert len(hits) == 5
    assert {"path", "score", "start_line", "end_line", "snippet", "chunk_id"} <= set(hits[0])
    assert hits[0]["path"] == str(page)  # the index's recorded model was used


def test_search_human_output(indexed: tuple[Path, Path]) -> None:
    db, _ = indexed
    result = CliRunner().invoke(cli, ["search", "archive files", "--db", str(db), "-k", "2",
                                      "--mode", "keyword"])
    assert result.exit_code == 0 and result.stderr == ""
    first = result.stdout.splitlines()[0]
    path, _, score = first.partition("  ")
    assert path.rsplit(":", 1)[1].replace("-", "").isdigit() and float(score) > 0


def test_search_queries_from_stdin_json_lines(indexed: tuple[Path, Path]) -> None:
    db, _ = indexed
    queries = ["configure apache modules", "audit log", "play audio"]
    result = CliRunner().invoke(cli, ["search", "-", "--db", str(db), "-k", "3"],
                                input="\n".join(queries) + "\n")
    assert result.exit_code == 0, result.stderr
    lines = result.stdout.splitlines()
    assert len(lines) == 3
    for line in lines:
        assert len(json.loads(line)) == 3
    single = json.loads(CliRunner().invoke(
        cli, ["search", queries[1], "--db", str(db), "-k", "3", "--json"]).stdout)
    assert [h["chunk_id"] for h in json.loads(lines[1])] == [h["chunk_id"] for h in single]


def test_status(indexed: tuple[Path, Path]) -> None:
    db, _ = indexed
    result = CliRunner().invoke(cli, ["status", "--db", str(db), "--json"])
    assert result.exit_code == 0
    info = json.loads(result.stdout)
    assert info["documents"] == 80 and info["chunks"] >= 80 and info["dims"] == 384
    assert info["size_bytes"] > 0 and info["last_run"]["summary"]["added"] == 80
    human = CliRunner().invoke(cli, ["status", "--db", str(db)])
    assert "documents: 80" in human.stdout


def test_reindex_needed_for_another_model(indexed: tuple[Path, Path], qwen_path: Path,
                                          tmp_path: Path) -> None:
    db, docs = indexed
    copy = tmp_path / "copy.db"
    shutil.copy(db, copy)
    result = CliRunner().invoke(cli, ["index", str(docs), "--db", str(copy), "-m",
                                      str(qwen_path)])
    assert result.exit_code == 1 and "--reindex" in result.stderr
    assert result.stderr.startswith("Error: ") and result.stderr.count("\n") == 1
    result = CliRunner().invoke(cli, ["index", str(docs), "--db", str(copy), "-m",
                                      str(qwen_path), "--reindex", "--json"])
    assert result.exit_code == 0 and json.loads(result.stdout)["added"] == 80


def test_reindex_on_a_new_index_file(indexed: tuple[Path, Path], qwen_path: Path,
                                     tmp_path: Path) -> None:
    """--reindex where no index exists yet builds one (it failed with 'no such table:
    main.vec_bits'), and a second --reindex rebuilds it."""
    _, docs = indexed
    db = tmp_path / "new.db"
    for _ in range(2):
        result = CliRunner().invoke(cli, ["index", str(docs), "--db", str(db), "-m",
                                          str(qwen_path), "--reindex", "--json"])
        assert result.exit_code == 0, result.output
        assert json.loads(result.stdout)["added"] == 80


def test_search_missing_index(tmp_path: Path) -> None:
    result = CliRunner().invoke(cli, ["search", "x", "--db", str(tmp_path / "none.db")])
    assert result.exit_code == 1 and "no index at" in result.stderr


def test_db_from_environment(indexed: tuple[Path, Path]) -> None:
    db, _ = indexed
    result = CliRunner().invoke(cli, ["status", "--json"], env={"GGUF_EMBED_DB": str(db)})
    assert result.exit_code == 0 and json.loads(result.stdout)["documents"] == 80
