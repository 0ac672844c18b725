"""The in-memory sign-bit cache behind vector search on large indexes (vector_cache.py):
results against an exact numpy scan, path filters, per-file grouping, deletes and adds seen by
a warm cache, a reused chunk id, damaged or foreign cache files, an unwritable folder, and
stored vectors with NaN/Inf."""

from __future__ import annotations

import fnmatch
import io
import os
import shutil
import sys
import tempfile
import warnings
from collections.abc import Callable
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest

from gguf_embed import search as search_mod
from gguf_embed import vector_cache
from gguf_embed._vectors import vec_blob
from gguf_embed.errors import NonFiniteVectors
from gguf_embed.search import search, vector_hits
from gguf_embed.store import Store
from gguf_embed.store_guard import cache_head, read_cache_head

DIMS = 128
PER_DOC = 5


@pytest.fixture(autouse=True)
def fast_path(monkeypatch: pytest.MonkeyPatch) -> None:
    """A low threshold: the cache serves every search of more than 50 chunks."""
    monkeypatch.setattr(search_mod, "EXACT_BELOW", 50)
    vector_cache.forget()


def unit(rng: np.random.Generator, n: int) -> np.ndarray:
    data = rng.standard_normal((n, DIMS)).astype(np.float32)
    return data / np.linalg.norm(data, axis=1, keepdims=True)


def add_docs(store: Store, vectors: np.ndarray, first: int, folder: str = "a") -> None:
    store.ensure_vectors(DIMS)
    with store.transaction():
        for d in range(0, len(vectors), PER_DOC):
            part = vectors[d:d + PER_DOC]
            chunks = [SimpleNamespace(text=f"chunk {first + d + i}", start_line=i + 1,
                                      end_line=i + 1, start_page=None, end_page=None,
                                      n_tokens=2, hash=f"h{first + d + i}")
                      for i in range(len(part))]
            store.write_document(path=f"/docs/{folder}/{first + d:06d}.md", hash="x", size=1,
                                 mtime=0.0, kind="markdown", chunks=chunks,
                                 vectors=[vec_blob(v) for v in part])


def clustered(rng: np.random.Generator, n: int) -> np.ndarray:
    """Unit vectors around 40 topics, as embeddings are (bench_search's recipe)."""
    topics = rng.standard_normal((40, DIMS)).astype(np.float32)
    data = topics[rng.integers(0, 40, n)] + 0.9 * rng.standard_normal((n, DIMS)).astype(
        np.float32)
    return data / np.linalg.norm(data, axis=1, keepdims=True)


def make(tmp_path: Path, n: int = 3000, seed: int = 1) -> tuple[Store, np.ndarray]:
    rng = np.random.default_rng(seed)
    vectors = clustered(rng, n)
    store = Store.open(tmp_path / "i.db")
    add_docs(store, vectors[: n // 2], 0, "a")
    add_docs(store, vectors[n // 2:], n // 2, "b")
    return store, vectors


def truth(store: Store, q: np.ndarray, k: int, glob: str | None = None) -> list[int]:
    """The exact top ``k`` chunk ids by numpy over every live vector (under ``glob``)."""
    rows = store.conn.execute("SELECT c.id, d.path, v.embedding FROM chunks c JOIN documents d "
                              "ON d.id = c.doc_id JOIN chunk_vectors v ON v.chunk_id = c.id "
                              "ORDER BY c.id").fetchall()
    rows = [r for r in rows if glob is None or fnmatch.fnmatchcase(r[1], glob)]
    ids = np.array([r[0] for r in rows])
    matrix = np.frombuffer(b"".join(r[2] for r in rows), dtype="<f4").reshape(len(rows), DIMS)
    sims = matrix @ q
    return [int(i) for i in ids[np.argsort(-sims, kind="stable")[:k]]]


def queries(vectors: np.ndarray, count: int = 15, seed: int = 5) -> np.ndarray:
    rng = np.random.default_rng(seed)
    picks = vectors[rng.integers(0, len(vectors), count)]
    out = picks + 0.5 * unit(rng, count)
    return out / np.linalg.norm(out, axis=1, keepdims=True)


def ids(hits: list[tuple[int, float]]) -> list[int]:
    return [chunk_id for chunk_id, _ in hits]


def test_fast_path_finds_the_exact_top_k(tmp_path: Path) -> None:
    store, vectors = make(tmp_path)
    for q in queries(vectors):
        fast = vector_hits(store, q, 10)
        assert ids(fast) == truth(store, q, 10)
        assert ids(vector_hits(store, q, 10, exact=True)) == ids(fast)
    assert vector_cache.cache_path(store.path).exists()  # written beside the index
    assert os.path.realpath(store.path) in vector_cache._warm


def test_path_filter_on_the_fast_path(tmp_path: Path) -> None:
    store, vectors = make(tmp_path)
    glob = "/docs/b/*"
    for q in queries(vectors):
        assert ids(vector_hits(store, q, 10, glob)) == truth(store, q, 10, glob)


def test_file_grouping_matches_the_exact_scan(tmp_path: Path) -> None:
    store, vectors = make(tmp_path)
    for q in queries(vectors, 8):
        fast = search(store, q, "query", k=5, mode="vector", group="file")
        slow = search(store, q, "query", k=5, mode="vector", group="file", exact=True)
        assert [(r.path, r.chunk_id) for r in fast] == [(r.path, r.chunk_id) for r in slow]
        hybrid = search(store, q, "chunk", k=5, mode="hybrid", path_glob="/docs/a/*")
        assert hybrid and all(r.path.startswith("/docs/a/") for r in hybrid)


def test_deleted_chunks_never_come_back(tmp_path: Path) -> None:
    store, vectors = make(tmp_path)
    qs = queries(vectors)
    before = [ids(vector_hits(store, q, 10)) for q in qs]  # the cache is warm now
    gone = sorted({p for row in before for p in store.chunk_docs(row[:3]).values()})
    paths = [p for p, (doc, *_) in store.documents().items() if doc in gone]
    with store.transaction():
        assert store.delete_documents(paths) == len(paths)
    live = set(store.chunk_docs(range(1, len(vectors) + 1)))
    for q in qs:
        hits = ids(vector_hits(store, q, 10))
        assert set(hits) <= live
        assert hits == truth(store, q, 10)


def test_added_chunks_are_found_by_a_warm_cache(tmp_path: Path) -> None:
    store, vectors = make(tmp_path)
    vector_hits(store, vectors[0], 10)
    rng = np.random.default_rng(9)
    new = unit(rng, 10)
    add_docs(store, new, 10_000, "c")
    for v in new:
        top = vector_hits(store, v, 1)
        assert store.chunk_rows(ids(top))[top[0][0]].path.startswith("/docs/c/")
        assert top[0][1] == pytest.approx(1.0, abs=1e-5)
    state = vector_cache.state_of(store)
    assert vector_cache._warm[os.path.realpath(store.path)].state == state


def test_a_reused_chunk_id_is_read_again(tmp_path: Path) -> None:
    """SQLite gives the ids of deleted newest chunks to the next ones: a cache that kept the
    old bits under those ids would miss the new vectors."""
    store, vectors = make(tmp_path)
    vector_hits(store, vectors[0], 10)  # warm
    (top,), = store.conn.execute("SELECT max(id) FROM chunks")
    last = max(store.documents().items(), key=lambda item: item[1][0])[0]
    with store.transaction():
        store.delete_documents([last])
    new = -vectors[-PER_DOC:]  # opposite directions: every sign bit flips
    add_docs(store, new, 20_000, "z")
    (again,), = store.conn.execute("SELECT max(id) FROM chunks")
    assert again == top  # the ids were reused
    for v in new:
        assert ids(vector_hits(store, v, 10)) == truth(store, v, 10)


def test_another_reader_sees_a_writers_changes(tmp_path: Path) -> None:
    store, vectors = make(tmp_path)
    reader = Store.open(store.path, readonly=True)
    with reader.conn:
        vector_hits(reader, vectors[1], 10)
    new = unit(np.random.default_rng(4), 5)
    add_docs(store, new, 30_000, "w")
    with store.transaction():
        store.delete_documents(["/docs/a/000000.md"])
    with reader.conn:  # one read transaction, as Index.search holds
        assert ids(vector_hits(reader, new[2], 1)) == truth(store, new[2], 1)
        assert ids(vector_hits(reader, vectors[1], 10)) == truth(store, vectors[1], 10)
    reader.close()


def test_a_damaged_cache_file_is_ignored_and_rewritten(tmp_path: Path) -> None:
    store, vectors = make(tmp_path)
    q = queries(vectors, 1)[0]
    want = truth(store, q, 10)
    vector_hits(store, q, 10)
    path = vector_cache.cache_path(store.path)
    data = bytearray(path.read_bytes())
    for damage in (lambda b: b[: len(b) // 2], lambda b: b"\x00" * len(b),
                   lambda b: b[:-40] + bytes(255 - x for x in b[-40:]), lambda b: b + b"x"):
        path.write_bytes(bytes(damage(bytearray(data))))
        assert vector_cache.load(path, DIMS) is None
        vector_cache.forget()
        assert ids(vector_hits(store, q, 10)) == want
        assert vector_cache.load(path, DIMS) is not None  # rebuilt and written again


def _with_header(data: bytes, change: Callable[[dict[str, Any]], None]) -> bytes:
    """A cache file's bytes with its JSON header changed by ``change``."""
    f = io.BytesIO(data)
    info = read_cache_head(f, vector_cache.MAGIC, 4096)
    assert info is not None
    rest = data[f.tell():]
    change(info)
    return cache_head(vector_cache.MAGIC, info) + rest


def test_loading_checks_a_sample_of_the_bits_and_bad_bits_never_give_a_wrong_score(
        tmp_path: Path) -> None:
    """A one-shot search does not read every sign bit to check the file (the scan reads
    them): the ids, documents and a sample of rows are checked.  Bits damaged between the
    sampled rows change at most which candidates are rescored: every score is still the exact
    cosine, of a live chunk."""
    store, vectors = make(tmp_path)
    q = queries(vectors, 1)[0]
    vector_hits(store, q, 10)
    path = vector_cache.cache_path(store.path)
    data = path.read_bytes()
    bits = vector_cache.load(path, DIMS)
    assert bits is not None and len(bits) == len(vectors) > 2 * vector_cache.QUICK_STRIDE
    row_bytes = bits.words.shape[1] * 8
    words_at = len(data) - len(bits) * row_bytes
    damaged = bytearray(data)
    for row in range(500, 520):  # between the sampled rows 0 and QUICK_STRIDE
        start = words_at + row * row_bytes
        damaged[start:start + row_bytes] = bytes(255 - x for x in damaged[start:start + row_bytes])
    path.write_bytes(bytes(damaged))
    vector_cache.forget()
    assert vector_cache.load(path, DIMS) is not None
    exact = {int(i): float(v @ q) for i, v in zip(store_ids(store), vectors, strict=True)}
    for chunk_id, score in vector_hits(store, q, 10):
        assert score == pytest.approx(exact[chunk_id], abs=1e-5)
    # a file from before the order-sensitive checksum ("check" alone, or with "quick") is
    # taken as stale, undamaged or not, and rebuilt from SQLite
    for old in (("quick", "order"), ("order",)):
        path.write_bytes(_with_header(data, lambda info, old=old: [info.pop(k) for k in old]))
        assert vector_cache.load(path, DIMS) is None
    vector_cache.forget()
    vector_hits(store, q, 10)
    assert vector_cache.load(path, DIMS) is not None  # written again, in today's format


def store_ids(store: Store) -> list[int]:
    return [r[0] for r in store.conn.execute("SELECT id FROM chunks ORDER BY id")]


def test_another_indexs_cache_file_is_not_used(tmp_path: Path) -> None:
    store, vectors = make(tmp_path)
    vector_hits(store, vectors[0], 10)
    other_dir = tmp_path / "other"
    other_dir.mkdir()
    other, other_vectors = make(other_dir, seed=2)  # same ids and counts, other vectors
    shutil.copy(vector_cache.cache_path(store.path), vector_cache.cache_path(other.path))
    vector_cache.forget()
    for q in queries(other_vectors, 5):
        assert ids(vector_hits(other, q, 10)) == truth(other, q, 10)


def test_an_unwritable_folder_is_cached_in_memory(tmp_path: Path,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    store, vectors = make(tmp_path)

    def refuse(*args: object, **kwargs: object) -> tuple[int, str]:
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(tempfile, "mkstemp", refuse)  # vector_cache imports it to write
    q = queries(vectors, 1)[0]
    assert ids(vector_hits(store, q, 10)) == truth(store, q, 10)
    assert not vector_cache.cache_path(store.path).exists()
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")]


def test_an_old_index_without_a_chunk_log_is_searched_as_before(tmp_path: Path) -> None:
    store, vectors = make(tmp_path)
    with store.transaction():
        store.conn.execute("DROP TABLE chunk_log")
    q = queries(vectors, 1)[0]
    assert vector_cache.current(store) is None
    assert set(ids(vector_hits(store, q, 10))) <= set(range(1, len(vectors) + 1))


@pytest.mark.parametrize("exact", [True, False])
@pytest.mark.parametrize("bad", [np.nan, np.inf])
def test_a_non_finite_stored_vector_is_skipped_and_reported_once(
        tmp_path: Path, exact: bool, bad: float) -> None:
    store, vectors = make(tmp_path, n=600)
    broken = vectors[7].copy()
    broken[3] = bad
    with store.transaction():
        store.conn.execute("UPDATE chunk_vectors SET embedding = ? WHERE chunk_id = 8",
                           (vec_blob(broken),))
    q = vectors[7]
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        for _ in range(2):
            hits = vector_hits(store, q, 10, exact=exact)
            assert 8 not in ids(hits) and len(hits) == 10
            assert all(np.isfinite(score) for _, score in hits)
            for mode in ("vector", "hybrid"):
                results = search(store, q, "chunk 7", k=5, mode=mode, exact=exact)
                assert results and all(np.isfinite(r.score) for r in results)
    reports = [w for w in caught if issubclass(w.category, NonFiniteVectors)]
    assert len(reports) == 1 and "/docs/a/000005.md" in str(reports[0].message)
    search_mod._reported.clear()


def test_the_cache_file_beside_an_index_inside_the_folder_is_not_indexed(tmp_path: Path) -> None:
    from gguf_embed.chunking import ChunkSettings
    from gguf_embed.index import Index
    from gguf_embed.testing import FakeEngine

    docs = tmp_path / "docs"
    docs.mkdir()
    for i in range(30):
        (docs / f"n{i}.md").write_text("\n".join(f"note {i} line {j}" for j in range(12)),
                                       encoding="utf-8")
    db = docs / "index.db"
    with Index(db, FakeEngine(), chunking=ChunkSettings(max_tokens=16, overlap=0)) as index:
        index.add([docs])
        assert index.store.chunk_count() > 50
        assert index.search("note 3", mode="vector")
        assert vector_cache.cache_path(db).exists()
        summary = index.add([docs])
        assert not any(".bits" in str(p) for p, _ in summary.skipped)
        assert not any(".bits" in p for p in index.store.documents())


def test_numpy_scan_finds_what_faiss_finds(tmp_path: Path,
                                           monkeypatch: pytest.MonkeyPatch) -> None:
    """Without faiss (no wheel for the platform) the coarse pass is numpy's popcount."""
    store, vectors = make(tmp_path)
    qs = queries(vectors, 8)
    monkeypatch.setattr(vector_cache, "FAISS_FROM", 0)
    with_faiss = [ids(vector_hits(store, q, 10)) for q in qs]
    monkeypatch.setattr(vector_cache, "_faiss_knn", lambda: None)
    vector_cache.forget()
    assert [ids(vector_hits(store, q, 10)) for q in qs] == with_faiss
    assert with_faiss == [truth(store, q, 10) for q in qs]


def test_a_small_index_is_scanned_without_importing_faiss(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """faiss's import costs a fresh process more than numpy's scan of a small index: a
    one-shot search there does without it (unless faiss is imported already)."""
    store, vectors = make(tmp_path)
    asked: list[bool] = []
    knn = vector_cache._faiss_knn

    def spy() -> object:
        asked.append(True)
        return knn()

    monkeypatch.setattr(vector_cache, "_faiss_knn", spy)
    monkeypatch.delitem(sys.modules, "faiss", raising=False)  # a fresh process
    q = queries(vectors, 1)[0]
    assert ids(vector_hits(store, q, 10)) == truth(store, q, 10)
    assert asked == []
    monkeypatch.setattr(vector_cache, "FAISS_FROM", 2 * len(vectors))  # words: 2 a row
    assert ids(vector_hits(store, q, 10)) == truth(store, q, 10)
    assert asked == [True]


def test_an_index_from_before_the_chunk_log_gets_one_when_opened_to_write(
        tmp_path: Path) -> None:
    store, vectors = make(tmp_path)
    with store.transaction():
        store.conn.execute("DROP TRIGGER chunk_log_ai")
        store.conn.execute("DROP TRIGGER chunk_log_ad")
        store.conn.execute("DROP TABLE chunk_log")
        store.conn.execute("DELETE FROM migrations WHERE name = '0004_chunk_log'")
    store.close()
    reopened = Store.open(tmp_path / "i.db")
    state = vector_cache.state_of(reopened)
    assert state is not None and state.inserted == len(vectors) and state.deleted == 0
    with reopened.transaction():
        reopened.delete_documents(["/docs/a/000000.md"])
    assert vector_cache.state_of(reopened) == vector_cache.State(
        state.epoch, len(vectors), PER_DOC)
    q = queries(vectors, 1)[0]
    assert ids(vector_hits(reopened, q, 10)) == truth(reopened, q, 10)
