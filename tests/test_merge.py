"""Merging shard indexes (issue 13 point 2): shards built over disjoint parts of a corpus merge
into an index equal to one built over all of it; a shard made otherwise is refused naming the
shard and the key; a path held twice keeps the newer copy; an interrupted merge (an exception
mid-copy, or SIGKILL) leaves the output valid and a re-run finishes it."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from gguf_embed import ChunkSettings, Index, IndexFileError, IndexMismatch, store_merge
from gguf_embed.cli import cli
from gguf_embed.testing import FakeEngine

DATA = Path(__file__).parent / "data"
PAGES = DATA / "tldr-linux" / "pages"
QUERIES = ["compress files into an archive", "list network interfaces", "show disk usage",
           "kill a process by name", "change file permissions", "显示 文件", "ファイル"]


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """36 tldr pages (30 English, 3 Chinese, 3 Japanese) in three folders a/, b/, c/
    (disjoint parts)."""
    root = tmp_path_factory.mktemp("corpus")
    pages = sorted(PAGES.glob("*.md"))[::50][:30] + \
        sorted((DATA / "tldr-cjk" / "pages.zh").glob("*/*.md"))[:3] + \
        sorted((DATA / "tldr-cjk" / "pages.ja").glob("*/*.md"))[:3]
    for i, page in enumerate(pages):
        part = root / "abc"[i % 3]
        part.mkdir(exist_ok=True)
        name = page.name if i < 30 else f"{page.parent.parent.name}-{page.name}"
        shutil.copy(page, part / name)
    return root


def build(db: Path, *paths: Path, engine: FakeEngine | None = None, **options: Any) -> Path:
    with Index(db, engine or FakeEngine(), **options) as index:
        summary = index.add(list(paths))
        assert not summary.failed
    return db


def content(db: Path) -> dict[str, Any]:
    """Everything an index holds, by path (no ids): documents, chunks with their vectors and
    sign bits, and the search results of a few queries in each mode."""
    with Index(db, FakeEngine(), readonly=True) as index:
        conn = index.store.conn
        docs = {r[0]: r[1:] for r in conn.execute(
            "SELECT path, hash, size, mtime, kind, n_chunks FROM documents")}
        chunks = sorted(conn.execute(
            "SELECT d.path, c.seq, c.text, c.start_line, c.end_line, c.n_tokens, c.hash, "
            "v.embedding, b.embedding FROM chunks c JOIN documents d ON d.id = c.doc_id "
            "JOIN chunk_vectors v ON v.chunk_id = c.id JOIN vec_bits b ON b.rowid = c.id"))
        (n_chunks,), = conn.execute("SELECT count(*) FROM chunks")
        (n_vectors,), = conn.execute("SELECT count(*) FROM chunk_vectors")
        (n_bits,), = conn.execute("SELECT count(*) FROM vec_bits")
        results = {}
        for mode in ("keyword", "vector", "hybrid"):
            for exact in (True, False):
                for query in QUERIES:
                    hits = index.search(query, k=8, mode=mode, group="chunk", exact=exact)
                    results[mode, exact, query] = sorted(
                        (-h.score, h.path, h.start_line) for h in hits)
        meta = {k: v for k, v in index.meta.items() if k != "created_at"}
    assert n_chunks == n_vectors == n_bits == len(chunks)
    return {"docs": docs, "chunks": chunks, "results": results, "meta": meta}


@pytest.fixture(scope="module")
def whole(corpus: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    db = tmp_path_factory.mktemp("whole") / "whole.db"
    build(db, corpus / "a", corpus / "b", corpus / "c")
    return content(db)


def shards(corpus: Path, tmp_path: Path, parts: str = "abc") -> list[Path]:
    return [build(tmp_path / f"shard-{p}.db", corpus / p) for p in parts]


def test_merged_shards_equal_one_index_over_everything(
        corpus: Path, tmp_path: Path, whole: dict[str, Any]) -> None:
    out = tmp_path / "out.db"
    with Index(out) as index:  # no model needed
        summary = index.merge_from(shards(corpus, tmp_path))
    assert summary.shards == 3 and summary.documents == len(whole["docs"]) == 36
    assert summary.chunks == len(whole["chunks"]) and summary.replaced == summary.kept == 0
    merged = content(out)
    assert merged["docs"] == whole["docs"]
    assert merged["chunks"] == whole["chunks"]  # same text, vectors and bits for each chunk
    assert merged["results"] == whole["results"]
    assert any(merged["results"].values())
    assert merged["meta"] == whole["meta"]  # model, dims, chunking and roots


def test_merge_into_an_existing_index(corpus: Path, tmp_path: Path,
                                      whole: dict[str, Any]) -> None:
    out = build(tmp_path / "out.db", corpus / "a")
    with Index(out) as index:
        summary = index.merge_from(shards(corpus, tmp_path, "bc"))
    assert summary.documents == 24
    assert content(out)["chunks"] == whole["chunks"]
    with Index(out, FakeEngine()) as index:  # and it goes on as a normal index
        assert index.add([corpus / "a", corpus / "b", corpus / "c"]).unchanged == 36


def test_a_shard_made_otherwise_is_refused_naming_it_and_the_key(
        corpus: Path, tmp_path: Path) -> None:
    good = build(tmp_path / "good.db", corpus / "a")
    other_model = build(tmp_path / "other.db", corpus / "b", engine=FakeEngine(name="other"))
    other_chunks = build(tmp_path / "chunks.db", corpus / "c",
                         chunking=ChunkSettings(max_tokens=100, overlap=10))
    out = tmp_path / "out.db"
    for bad, key in ((other_model, "model_fingerprint"), (other_chunks, "chunking")):
        with Index(out) as index:
            with pytest.raises(IndexMismatch) as caught:
                index.merge_from([good, bad])
            assert index.store.counts()["documents"] == 0  # checked before any write
        message = str(caught.value)
        assert str(bad) in message and key in message and "\n" not in message
    runner = CliRunner()
    result = runner.invoke(cli, ["merge", str(out), str(good), str(other_model)])
    assert result.exit_code == 1
    assert result.stdout == "" and "model_fingerprint" in result.stderr
    assert str(other_model) in result.stderr


def test_a_path_held_twice_keeps_the_newer_copy(corpus: Path, tmp_path: Path) -> None:
    docs = tmp_path / "docs"
    shutil.copytree(corpus / "a", docs)
    page = sorted(docs.glob("*.md"))[0]
    old = build(tmp_path / "old.db", docs)
    page.write_text(page.read_text(encoding="utf-8") + "\n- Brand new line: `xyzzy`\n",
                    encoding="utf-8")
    os.utime(page, (page.stat().st_atime, page.stat().st_mtime + 100))
    new = build(tmp_path / "new.db", docs)
    for order in ([old, new], [new, old]):
        out = tmp_path / f"out-{order[0].stem}.db"
        with Index(out) as index:
            summary = index.merge_from(order)
        assert summary.documents - summary.replaced == 12  # 12 paths, each once
        assert summary.kept + summary.replaced == 12  # the second shard's copies
        with Index(out, FakeEngine(), readonly=True) as index:
            assert index.store.counts()["documents"] == 12
            hits = index.search("xyzzy", mode="keyword", k=1)
            assert [Path(h.path) for h in hits] == [page]  # the newer text, in either order
            assert index.store.documents()[str(page)][3] == page.stat().st_mtime
    same = build(tmp_path / "same.db", docs)  # same mtime: the copy already in OUT stays
    with Index(tmp_path / "out-new.db") as index:
        summary = index.merge_from([same])
    assert summary.kept == 12 and summary.documents == summary.replaced == 0
    with Index(tmp_path / "refused.db") as index:
        index.merge_from([old])
        with pytest.raises(IndexFileError, match=r"shard .*new\.db holds 12 document"):
            index.merge_from([new], duplicates="refuse")
        assert index.store.counts()["documents"] == 12


def test_an_interrupted_merge_leaves_the_output_valid_and_a_rerun_finishes(
        corpus: Path, tmp_path: Path, whole: dict[str, Any],
        monkeypatch: pytest.MonkeyPatch) -> None:
    parts = shards(corpus, tmp_path)
    out = tmp_path / "out.db"
    calls: list[str] = []

    def interrupt(step: str) -> None:
        calls.append(step)
        if len(calls) == 9:  # the second shard (5 steps a shard), after its vectors
            raise KeyboardInterrupt

    monkeypatch.setattr(store_merge, "_copied", interrupt)
    with Index(out) as index, pytest.raises(KeyboardInterrupt):
        index.merge_from(parts)
    monkeypatch.undo()
    assert calls[-1] == "vectors"
    first = content(out)  # opens, and every chunk has its vector and bits
    assert set(first["docs"]) == {str(p) for p in (corpus / "a").glob("*.md")}
    with Index(out) as index:
        summary = index.merge_from(parts)
    assert summary.kept == 12 and summary.documents == 24
    assert content(out)["chunks"] == whole["chunks"]


def test_a_killed_merge_leaves_the_output_valid(corpus: Path, tmp_path: Path,
                                                whole: dict[str, Any]) -> None:
    parts = shards(corpus, tmp_path)
    out = tmp_path / "out.db"
    code = (
        "import os, signal, sys\n"
        "from gguf_embed import Index, store_merge\n"
        "seen = []\n"
        "def die(step):\n"
        "    seen.append(step)\n"
        "    if len(seen) == 10:\n"  # the second shard, all tables copied, not committed
        "        os.kill(os.getpid(), signal.SIGKILL)\n"
        "store_merge._copied = die\n"
        "with Index(sys.argv[1]) as index:\n"
        "    index.merge_from(sys.argv[2:])\n")
    proc = subprocess.run([sys.executable, "-c", code, str(out), *map(str, parts)],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == -signal.SIGKILL, proc.stderr
    first = content(out)
    assert set(first["docs"]) == {str(p) for p in (corpus / "a").glob("*.md")}
    result = CliRunner().invoke(cli, ["merge", str(out), *map(str, parts), "--json"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["documents"] == 24
    assert "merged" in result.stderr and "(3/3)" in result.stderr
    assert content(out)["chunks"] == whole["chunks"]


def test_bad_shards_are_refused_before_anything_is_written(corpus: Path,
                                                          tmp_path: Path) -> None:
    good = build(tmp_path / "good.db", corpus / "a")
    out = tmp_path / "out.db"
    not_an_index = tmp_path / "notes.txt"
    not_an_index.write_text("hello\n")
    with Index(out) as index:
        with pytest.raises(IndexFileError, match="is the output index itself"):
            index.merge_from([good, out])
        with pytest.raises(IndexFileError, match="named twice"):
            index.merge_from([good, good])
        with pytest.raises(IndexFileError, match="no such index file"):
            index.merge_from([good, tmp_path / "missing.db"])
        with pytest.raises(IndexFileError, match=r"notes\.txt"):
            index.merge_from([good, not_an_index])
        assert index.store.counts()["documents"] == 0
    assert not (tmp_path / "missing.db").exists()
