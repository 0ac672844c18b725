"""Indexing and search logic with the fake embedder (fast), on real tldr pages and PDFs."""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from gguf_embed import IndexMismatch
from gguf_embed.chunking import ChunkSettings
from gguf_embed.index import Index
from gguf_embed.testing import FakeEngine


@pytest.fixture
def docs(tmp_path: Path, corpora: Path) -> Path:
    folder = tmp_path / "docs"
    folder.mkdir()
    source = corpora / "tldr-linux" / "pages"
    for name in sorted(os.listdir(source))[:60]:
        shutil.copy(source / name, folder / name)
    return folder


def rows(index: Index) -> list[tuple]:
    return index.store.conn.execute(
        "SELECT d.path, d.hash, c.seq, c.start_line, c.end_line, c.hash FROM chunks c "
        "JOIN documents d ON d.id = c.doc_id ORDER BY d.path, c.seq").fetchall()


def orphans(index: Index) -> dict[str, int]:
    conn = index.store.conn
    q = {
        "chunks_without_document": "SELECT count(*) FROM chunks WHERE doc_id NOT IN "
                                   "(SELECT id FROM documents)",
        "vectors_without_chunk": "SELECT count(*) FROM chunk_vectors WHERE chunk_id NOT IN "
                                 "(SELECT id FROM chunks)",
        "bits_without_chunk": "SELECT count(*) FROM vec_bits WHERE rowid NOT IN "
                              "(SELECT id FROM chunks)",
        "chunks_without_vector": "SELECT count(*) FROM chunks WHERE id NOT IN "
                                 "(SELECT chunk_id FROM chunk_vectors)",
        "chunks_without_bits": "SELECT count(*) FROM chunks WHERE id NOT IN "
                               "(SELECT rowid FROM vec_bits)",
    }
    out = {name: conn.execute(sql).fetchone()[0] for name, sql in q.items()}
    (fts,), = conn.execute("SELECT count(*) FROM fts_chunks")
    (chunks,), = conn.execute("SELECT count(*) FROM chunks")
    out["fts_minus_chunks"] = fts - chunks
    return out


def test_index_then_search_finds_the_page(tmp_path: Path, docs: Path) -> None:
    engine = FakeEngine()
    with Index(tmp_path / "i.db", engine) as index:
        summary = index.add([docs])
        assert summary.added == 60 and not summary.failed
        counts = index.store.counts()
        assert counts["documents"] == 60 and counts["chunks"] >= 60
        target = sorted(docs.iterdir())[7]
        first_line = next(ln for ln in target.read_text().splitlines() if ln.startswith("- "))
        for mode in ("hybrid", "vector", "keyword"):
            hits = index.search(first_line[2:], k=5, mode=mode)
            assert hits and hits[0].path == str(target), mode
            hit = hits[0]
            assert 1 <= hit.start_line <= hit.end_line and hit.snippet
        assert all(v == 0 for v in orphans(index).values())


def test_incremental_runs_embed_only_what_changed(tmp_path: Path, docs: Path) -> None:
    engine = FakeEngine()
    with Index(tmp_path / "i.db", engine) as index:
        index.add([docs])
        before = rows(index)
        engine.calls.clear()
        again = index.add([docs])
        assert (again.added, again.updated, again.unchanged) == (0, 0, 60)
        assert engine.calls == [] and rows(index) == before

        files = sorted(docs.iterdir())
        moved = files[0].rename(docs / "renamed.md")
        files[1].unlink()
        edited = files[2]
        edited.write_text(edited.read_text() + "\n- A brand new example line: `cmd --new`\n")
        os.utime(files[3], None)  # touched, same content
        engine.calls.clear()
        summary = index.add([docs])
        assert (summary.added, summary.updated, summary.moved, summary.removed) == (0, 1, 1, 1)
        assert summary.unchanged == 57
        assert sum(engine.calls) == 1  # only the edited chunk was embedded
        paths = {r[0] for r in rows(index)}
        assert str(moved) in paths and str(files[0]) not in paths and str(files[1]) not in paths
        assert all(v == 0 for v in orphans(index).values())


def test_copied_file_reuses_vectors(tmp_path: Path, docs: Path) -> None:
    engine = FakeEngine()
    with Index(tmp_path / "i.db", engine) as index:
        index.add([docs])
        shutil.copy(sorted(docs.iterdir())[0], docs / "copy.md")
        engine.calls.clear()
        summary = index.add([docs])
        assert summary.added == 1 and engine.calls == [] and summary.chunks_reused >= 1


def test_other_roots_are_left_alone(tmp_path: Path, docs: Path, corpora: Path) -> None:
    other = tmp_path / "other"
    other.mkdir()
    shutil.copy(corpora / "tldr-linux" / "pages" / "systemctl.md", other / "systemctl.md")
    with Index(tmp_path / "i.db", FakeEngine()) as index:
        index.add([docs])
        index.add([other])
        assert index.store.counts()["documents"] == 61
        assert index.remove([other]) == 1
        assert index.store.counts()["documents"] == 60


def test_bad_inputs_are_named_and_do_not_stop_the_run(tmp_path: Path, docs: Path,
                                                      corpora: Path) -> None:
    (docs / "empty.md").write_text("")
    (docs / "blank.txt").write_text("   \n\n")
    (docs / "binary.dat").write_bytes(bytes(range(256)) * 10)
    (docs / "latin1.txt").write_bytes("caf\xe9 cr\xe8me".encode("latin-1"))
    (docs / "broken.pdf").write_bytes(b"%PDF-1.4\n1 0 obj <<>> garbage")
    (docs / "huge.txt").write_text("x" * 3_000_000)
    locked = docs / "locked.md"
    locked.write_text("secret")
    locked.chmod(0)
    (docs / "sub").mkdir()
    (docs / "sub" / "loop").symlink_to(docs)
    (docs / "dangling.md").symlink_to(docs / "nowhere.md")
    shutil.copy(corpora / "pdf" / "R-FAQ.pdf", docs / "manual.pdf")
    with Index(tmp_path / "i.db", FakeEngine()) as index:
        summary = index.add([docs], max_file_bytes=2_000_000)
        reasons = {Path(p).name: r for p, r in summary.skipped + summary.failed}
        assert reasons["empty.md"] == "empty" and reasons["blank.txt"] == "empty"
        assert reasons["binary.dat"] == "binary"
        assert reasons["latin1.txt"].startswith("not UTF-8")
        assert reasons["broken.pdf"].startswith("broken PDF")
        assert reasons["huge.txt"].startswith("too large")
        if os.geteuid() != 0:  # root can read anything
            assert reasons["locked.md"].startswith("unreadable")
        assert reasons["loop"].startswith("symlink loop")
        assert reasons["dangling.md"] == "broken symlink"
        assert summary.added >= 61  # the 60 pages and the real PDF
        pdf_hits = index.search("Kurt Hornik frequently asked questions", k=3, mode="keyword")
        assert pdf_hits[0].path.endswith("manual.pdf") and pdf_hits[0].start_page >= 1
        assert all(v == 0 for v in orphans(index).values())


def test_ignore_files_and_globs(tmp_path: Path, docs: Path) -> None:
    (docs / ".gitignore").write_text("t*.md\n")
    (docs / "notes").mkdir()
    (docs / "notes" / ".ggufembedignore").write_text("private.txt\n")
    (docs / "notes" / "private.txt").write_text("do not index me")
    (docs / "notes" / "public.txt").write_text("index me please")
    with Index(tmp_path / "i.db", FakeEngine()) as index:
        index.add([docs])
        paths = {Path(p).name for p in index.store.documents()}
        assert "public.txt" in paths and "private.txt" not in paths
        assert not any(name.startswith("t") and name.endswith(".md") for name in paths)
    with Index(tmp_path / "j.db", FakeEngine()) as index:
        index.add([docs], include=["*.txt"], exclude=["notes/private*"], use_ignore_files=False)
        assert {Path(p).name for p in index.store.documents()} == {"public.txt"}


def test_path_filter(tmp_path: Path, docs: Path) -> None:
    with Index(tmp_path / "i.db", FakeEngine()) as index:
        index.add([docs])
        target = sorted(docs.iterdir())[5]
        for mode in ("hybrid", "vector", "keyword"):
            hits = index.search(f"{target.stem} files", k=50, mode=mode, path=str(target))
            assert hits and {h.path for h in hits} == {str(target)}, mode
        folder_hits = index.search("files", k=100, path=str(docs))
        assert len(folder_hits) > 10
        assert index.search("files", k=50, path="*.nothing") == []


def test_other_model_or_dims_is_refused(tmp_path: Path, docs: Path) -> None:
    db = tmp_path / "i.db"
    with Index(db, FakeEngine(dims=64)) as index:
        index.add([docs])
    with pytest.raises(IndexMismatch, match="--reindex"):
        Index(db, FakeEngine(dims=32))
    with pytest.raises(IndexMismatch, match="--reindex"):
        Index(db, FakeEngine(dims=64, name="other"))
    with pytest.raises(IndexMismatch, match="chunked"):
        Index(db, FakeEngine(dims=64), chunking=ChunkSettings(100, 10))
    with Index(db, FakeEngine(dims=32), reindex=True) as index:
        assert index.store.counts()["documents"] == 0 and index.dims == 32
        index.add([docs])
        assert index.search("files", k=1)


def test_matryoshka_index(tmp_path: Path, docs: Path) -> None:
    engine = FakeEngine(dims=64)
    with Index(tmp_path / "i.db", engine, dimensions=16) as index:
        index.add([docs])
        assert index.dims == 16
        (blob,), = index.store.conn.execute("SELECT embedding FROM chunk_vectors LIMIT 1")
        assert len(np.frombuffer(blob, dtype="<f4")) == 16
        assert index.search("archive", k=3)


def test_readers_during_writes(tmp_path: Path, docs: Path) -> None:
    """WAL: a reader on another connection searches while a writer holds a transaction."""
    db = tmp_path / "i.db"
    engine = FakeEngine()
    with Index(db, engine) as writer:
        writer.add([docs])
        with Index(db, engine, readonly=True) as reader:
            with writer.store.transaction():
                writer.store.delete_documents(list(writer.store.documents())[:10])
                assert len(reader.search("files", k=5)) == 5  # sees the committed state
            assert reader.store.counts()["documents"] == 50


def test_unreadable_file_is_named_even_as_root(tmp_path: Path, docs: Path,
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    """chmod 0 does not stop root (CI runs as root), so make the open itself fail."""
    locked = docs / "locked.md"
    locked.write_text("secret")
    real_open = os.open

    def failing_open(path: Any, *args: Any, **kwargs: Any) -> int:
        if os.path.basename(str(path)) == "locked.md":
            raise PermissionError(13, "Permission denied")
        return real_open(path, *args, **kwargs)

    monkeypatch.setattr(os, "open", failing_open)
    with Index(tmp_path / "i.db", FakeEngine()) as index:
        summary = index.add([docs])
    assert (str(locked), "unreadable: permission denied") in summary.failed
    assert summary.added == 60
