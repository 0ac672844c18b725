"""The index file's guards (issue 18): a newer schema is not written, a FIFO or device is refused
at once, a full disk is one error and the file stays valid, a refused open leaves no file, and
no vector with NaN or Inf is ever stored."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Sequence
from pathlib import Path

import apsw
import numpy as np
import pytest

from gguf_embed._vectors import finish
from gguf_embed.chunking import ChunkSettings
from gguf_embed.errors import (
    IndexFileError,
    IndexTooNew,
    IndexWriteError,
    InputError,
    InvalidDimensions,
    NonFiniteVector,
)
from gguf_embed.index import Index
from gguf_embed.protocol import Embeddings, Prepared
from gguf_embed.store import SCHEMA_VERSION, Store
from gguf_embed.testing import FakeEngine

ROOT = Path(__file__).resolve().parent.parent


def write_docs(folder: Path, count: int = 3, words: str = "otters and badgers") -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(count):
        (folder / f"page{i}.md").write_text(f"# Page {i}\n\nThis page {i} is about {words}.\n")
    return folder


def built(tmp_path: Path, name: str = "i.db", engine: FakeEngine | None = None) -> Path:
    db = tmp_path / name
    with Index(db, engine or FakeEngine()) as index:
        index.add([write_docs(tmp_path / f"docs-{name}")])
    return db


def leftovers(db: Path) -> list[str]:
    return sorted(p.name for p in db.parent.glob(db.name + "*")) if db.parent.exists() else []


# ---------------------------------------------------------------- a newer schema
def _future(db: Path, *, migration: str | None = "0099_from_the_future",
            version: int | None = None) -> None:
    conn = apsw.Connection(str(db))
    if migration:
        conn.execute("INSERT INTO migrations(name, applied_at) VALUES (?, 0)", (migration,))
    if version:
        conn.execute("UPDATE meta SET value = ? WHERE key = 'schema_version'",
                     (json.dumps(version),))
    conn.close()


@pytest.mark.parametrize("future", [{"migration": "0099_from_the_future"},
                                    {"migration": None, "version": SCHEMA_VERSION + 5}])
def test_an_index_of_a_newer_schema_is_refused_for_writing(tmp_path: Path,
                                                           future: dict[str, object]) -> None:
    db = built(tmp_path)
    _future(db, **future)  # type: ignore[arg-type]
    before = db.read_bytes()
    written = SCHEMA_VERSION + (1 if future.get("migration") else 5)
    with pytest.raises(IndexTooNew) as info:
        Index(db, FakeEngine())
    message = str(info.value)
    assert f"schema {written}" in message and f"knows schema {SCHEMA_VERSION}" in message
    assert "upgrade gguf-embed" in message
    assert (info.value.written, info.value.known) == (written, SCHEMA_VERSION)
    assert db.read_bytes() == before  # not a byte written
    with Index(db, FakeEngine(), readonly=True) as index:  # reading goes on
        assert index.search("otters", mode="keyword")
        assert index.store.too_new


def test_a_shard_of_a_newer_schema_is_not_merged(tmp_path: Path) -> None:
    shard = built(tmp_path, "shard.db")
    _future(shard)
    out = tmp_path / "out.db"
    with Index(out) as index, pytest.raises(IndexFileError, match="schema"):
        index.merge_from([shard])


# ---------------------------------------------------------------- not a regular file
def _bounded(target: object, *args: object) -> object:
    """Run ``target`` on a thread; a hang is a failure, not a hung suite."""
    box: dict[str, object] = {}

    def run() -> None:
        try:
            box["value"] = target(*args)  # type: ignore[operator]
        except BaseException as exc:
            box["error"] = exc

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    thread.join(30)
    assert not thread.is_alive(), "hung (a FIFO opened by SQLite blocks)"
    if "error" in box:
        raise box["error"]  # type: ignore[misc]
    return box.get("value")


@pytest.mark.parametrize("readonly", [True, False])
@pytest.mark.parametrize("kind", ["fifo", "folder", "device", "fifo-wal"])
def test_a_non_regular_index_path_is_refused_at_once(tmp_path: Path, kind: str,
                                                     readonly: bool) -> None:
    db = tmp_path / "i.db"
    if kind == "fifo":
        os.mkfifo(db)
    elif kind == "folder":
        db.mkdir()
    elif kind == "device":
        db = Path("/dev/null")
    else:
        db = built(tmp_path)
        os.mkfifo(str(db) + "-wal")
    with pytest.raises(IndexFileError) as info:
        _bounded(lambda: Index(db, FakeEngine(), readonly=readonly).close())
    assert "not an index file" in str(info.value)
    if kind == "device":
        assert "character device" in str(info.value)


@pytest.mark.parametrize("readonly", [True, False])
@pytest.mark.parametrize("suffix", ["-wal", "-shm", "-journal"])
def test_a_symlinked_side_file_is_named_and_its_target_untouched(
        tmp_path: Path, suffix: str, readonly: bool) -> None:
    """Someone who can write the index's folder plants `i.db-wal -> victim`: the open is
    refused in one line naming that file (not SQLite's "unable to open database file"), and
    the victim is unchanged."""
    db = built(tmp_path)
    for side in ("-wal", "-shm"):
        Path(f"{db}{side}").unlink(missing_ok=True)
    victim = tmp_path / "victim.txt"
    victim.write_text("precious\n")
    os.symlink(victim, f"{db}{suffix}")
    with pytest.raises(IndexFileError, match="is a symbolic link") as info:
        Index(db, FakeEngine(), readonly=readonly).close()
    assert f"i.db{suffix}" in str(info.value)
    assert victim.read_text() == "precious\n"


# ---------------------------------------------------------------- a refused open leaves nothing
@pytest.mark.parametrize("refusal", ["dimensions", "chunking", "context"])
def test_an_index_refused_for_its_options_leaves_no_file(tmp_path: Path, refusal: str) -> None:
    db = tmp_path / "new" / "deeper" / "i.db"
    engine = FakeEngine(dims=64, max_tokens=128)
    with pytest.raises((InputError, InvalidDimensions)):
        if refusal == "dimensions":
            Index(db, engine, dimensions=100_000)
        elif refusal == "chunking":
            Index(db, engine, chunking=ChunkSettings(64, 64))
        else:
            Index(db, engine, chunking=ChunkSettings(4096, 32))
    assert not (tmp_path / "new").exists()


def test_a_failed_merge_into_a_new_output_leaves_no_file(tmp_path: Path) -> None:
    good = built(tmp_path, "a.db", FakeEngine(dims=64))
    other = built(tmp_path, "b.db", FakeEngine(dims=32))
    junk = tmp_path / "junk.db"
    junk.write_text("not an index at all\n" * 100)
    for shards in ([good, other], [good, junk], [tmp_path / "missing.db"]):
        out = tmp_path / "out" / "merged.db"
        with pytest.raises(IndexFileError), Index(out) as index:
            index.merge_from(shards)
        assert not (tmp_path / "out").exists(), shards


def test_an_existing_index_is_kept_when_a_merge_into_it_fails(tmp_path: Path) -> None:
    out = built(tmp_path, "out.db", FakeEngine(dims=64))
    other = built(tmp_path, "b.db", FakeEngine(dims=32))
    with pytest.raises(IndexFileError), Index(out) as index:
        index.merge_from([other])
    with Index(out, readonly=True) as index:
        assert len(index.store.documents()) == 3


# ---------------------------------------------------------------- disk full, file-size limit
def test_a_full_disk_is_one_error_and_the_index_stays_valid(tmp_path: Path,
                                                            monkeypatch: pytest.MonkeyPatch
                                                            ) -> None:
    db = built(tmp_path)
    calls = {"n": 0}
    real = Store.write_document

    def full(self: Store, **kwargs: object) -> None:
        calls["n"] += 1
        if calls["n"] > 1:
            raise apsw.FullError("database or disk is full")
        real(self, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(Store, "write_document", full)
    more = write_docs(tmp_path / "more", 80, "quokkas")
    with Index(db, FakeEngine()) as index, pytest.raises(IndexWriteError) as info:
        index.add([more])
    assert str(info.value).startswith(f"cannot write {db}: the disk is full")
    assert "\n" not in str(info.value)
    monkeypatch.undo()
    with Index(db, FakeEngine(), readonly=True) as index:
        assert index.store.conn.execute("PRAGMA integrity_check").fetchall() == [("ok",)]
        assert len(index.store.documents()) == 3  # the batch that failed was rolled back


FSIZE_SCRIPT = textwrap.dedent("""
    import resource, signal, sys
    from gguf_embed.index import Index
    from gguf_embed.testing import FakeEngine
    from gguf_embed.errors import IndexWriteError
    db, docs, limit = sys.argv[1], sys.argv[2], int(sys.argv[3])
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # write() then fails with EFBIG
    resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))
    try:
        with Index(db, FakeEngine(dims=256)) as index:
            index.add([docs])
    except IndexWriteError as exc:
        print("IndexWriteError:", exc)
        sys.exit(3)
""")


def test_a_file_size_limit_is_one_error_and_the_index_stays_valid(tmp_path: Path) -> None:
    db = built(tmp_path, engine=FakeEngine(dims=256))
    docs = tmp_path / "big"
    docs.mkdir()
    for i in range(300):
        (docs / f"f{i}.md").write_text(" ".join(f"word{i}x{j}" for j in range(300)))
    limit = db.stat().st_size + 400_000
    run = subprocess.run([sys.executable, "-c", FSIZE_SCRIPT, str(db), str(docs), str(limit)],
                         capture_output=True, text=True, timeout=300,
                         env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert run.returncode == 3, (run.stdout, run.stderr)
    assert f"cannot write {db}: the file-size limit was reached" in run.stdout
    assert "Traceback" not in run.stderr
    with Index(db, readonly=True) as index:
        assert index.store.conn.execute("PRAGMA integrity_check").fetchall() == [("ok",)]
        held = len(index.store.documents())
    assert 3 <= held < 303
    with Index(db, FakeEngine(dims=256)) as index:  # no limit: the same run finishes
        index.add([docs])
        assert len(index.store.documents()) == 303


# ---------------------------------------------------------------- NaN and Inf never stored
class PoisonEngine(FakeEngine):
    """Gives NaN for any text with the word 'poison' (as a broken model build might)."""

    def embed_prepared(self, prepared: Prepared | Sequence[np.ndarray], *,
                       dimensions: int | None = None, urgent: bool = False) -> Embeddings:
        seqs = prepared.sequences if isinstance(prepared, Prepared) else list(prepared)
        poison = int(self.tokenize("poison")[1])
        raw = []
        for tokens in seqs:
            vec = np.zeros(self.dims, dtype=np.float32)
            for t in tokens[1:-1]:
                vec[t % self.dims] += 1.0
            vec[0] += 0.01
            if poison in tokens:
                vec[3] = np.nan
            raw.append(vec)
        return Embeddings(finish(np.stack(raw), dimensions), [len(s) for s in seqs])


def test_the_engine_path_refuses_a_non_finite_vector_naming_the_input() -> None:
    with pytest.raises(NonFiniteVector) as info:
        PoisonEngine().encode(["fine text", "more fine text", "a poison pill"])
    assert info.value.indices == [2]
    assert str(info.value).startswith("input 2 gave a non-finite vector")
    with pytest.raises(NonFiniteVector):
        finish(np.array([[1.0, np.inf], [1.0, 2.0]], dtype=np.float32))


def test_index_skips_the_file_with_a_non_finite_vector_and_goes_on(tmp_path: Path) -> None:
    docs = write_docs(tmp_path / "docs", 5)
    (docs / "bad.md").write_text("# Bad\n\nThis one is poison for the model.\n")
    db = tmp_path / "i.db"
    with Index(db, PoisonEngine()) as index:
        summary = index.add([docs])
        assert summary.added == 5
        assert [(Path(p).name, "non-finite" in r) for p, r in summary.failed] == [
            ("bad.md", True)]
        blobs = [r[0] for r in index.store.conn.execute("SELECT embedding FROM chunk_vectors")]
        assert blobs and all(np.isfinite(np.frombuffer(b, dtype="<f4")).all() for b in blobs)
        assert index.search("badgers")  # vector search works


def test_the_store_refuses_a_non_finite_vector(tmp_path: Path) -> None:
    db = built(tmp_path)
    nan = np.full(64, np.nan, dtype="<f4").tobytes()
    with Index(db, FakeEngine()) as index, pytest.raises(NonFiniteVector), \
            index.store.transaction():
        index.store.write_document(path="/x.md", hash="h", size=1, mtime=time.time(),
                                   kind="md", chunks=[object()], vectors=[nan])
    assert str(tmp_path / "x.md") not in documents_of(db)


def documents_of(db: Path) -> list[str]:
    with Index(db, readonly=True) as index:
        return list(index.store.documents())


def test_requests_joined_in_one_decode_fail_only_where_a_vector_is_non_finite() -> None:
    from gguf_embed.batcher import Batcher

    engine = PoisonEngine()
    batcher = Batcher(engine, window=0.5)
    try:
        good = batcher.submit(engine.prepare(["otters swim", "badgers dig"]).sequences, None)
        bad = batcher.submit(engine.prepare(["fine", "a poison pill"]).sequences, None)
        assert good.result(30).shape == (2, engine.dims)
        with pytest.raises(NonFiniteVector) as info:
            bad.result(30)
        assert info.value.indices == [1] and str(info.value).startswith("input 1 ")
        assert batcher.decodes == 1  # they were joined, and only one request failed
    finally:
        batcher.close()


def test_a_shard_holding_a_non_finite_vector_is_not_merged(tmp_path: Path) -> None:
    shard = built(tmp_path, "shard.db")
    conn = apsw.Connection(str(shard))  # as an older version could have stored it
    conn.execute("UPDATE chunk_vectors SET embedding = ? WHERE chunk_id = "
                 "(SELECT min(chunk_id) FROM chunk_vectors)",
                 (np.full(64, np.nan, dtype="<f4").tobytes(),))
    conn.close()
    out = tmp_path / "out.db"
    with pytest.raises(IndexFileError, match="NaN or Inf"), Index(out) as index:
        index.merge_from([shard])
    assert not out.exists()
