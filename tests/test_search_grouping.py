"""One result per file on the fast path (search.chunk_docs, vector_cache.chunk_docs): the
files of the exact scan grouped per file, each candidate's document taken from the sign-bit
cache only when it is at the search's own state, and INDEX.bits' arrays aligned so that the
lookup does not copy them."""

from __future__ import annotations

import os
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest

from gguf_embed import search as search_mod
from gguf_embed import vector_cache
from gguf_embed._vectors import vec_blob
from gguf_embed.search import search, vector_hits
from gguf_embed.store import Store
from tests.test_fast_search import DIMS, PER_DOC, _with_header, make, queries, truth


@pytest.fixture(autouse=True)
def fast_path(monkeypatch: pytest.MonkeyPatch) -> None:
    """A low threshold: the cache serves every search of more than 50 chunks."""
    monkeypatch.setattr(search_mod, "EXACT_BELOW", 50)
    vector_cache.forget()


def file_truth(store: Store, q: np.ndarray, k: int) -> list[tuple[str, int]]:
    """The exact scan grouped per file: (path, best chunk id) of the ``k`` files whose best
    chunk is closest to ``q`` (every live vector scored by numpy)."""
    paths = {chunk_id: row.path
             for chunk_id, row in store.chunk_rows(truth(store, q, 10_000)).items()}
    out: list[tuple[str, int]] = []
    for chunk_id in truth(store, q, 10_000):
        if paths[chunk_id] not in {path for path, _ in out}:
            out.append((paths[chunk_id], chunk_id))
    return out[:k]


def test_file_grouping_takes_documents_from_a_current_cache(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Grouping by file needs each candidate's document: the cache at the search's state
    holds them, so no chunk row beyond the ones shown is read from SQLite (per-file search
    costs what per-chunk does), and the files are those of the exact scan."""
    store, vectors = make(tmp_path)
    asked: list[int] = []
    real = Store.chunk_docs

    def spy(self: Store, chunk_ids: Any) -> dict[int, int]:
        asked.append(1)
        return real(self, chunk_ids)

    monkeypatch.setattr(Store, "chunk_docs", spy)
    for loaded in (False, True):  # the process's cache, then INDEX.bits mapped
        if loaded:
            vector_cache.forget()
        for q in queries(vectors, 6):
            with store.conn:  # one read transaction, as Index.search holds
                fast = search(store, q, "chunk", k=5, mode="vector", group="file")
                assert [(r.path, r.chunk_id) for r in fast] == file_truth(store, q, 5)
                assert search(store, q, "chunk", k=5, mode="hybrid", group="file")
        assert asked == []
    assert isinstance(vector_cache._warm[os.path.realpath(store.path)].ids, np.memmap)
    # an INDEX.bits written before its arrays were aligned: SQLite says, the same files
    path = vector_cache.cache_path(store.path)
    path.write_bytes(_with_header(path.read_bytes(),
                                  lambda info: info.update(pad=info["pad"] + " ")))
    vector_cache.forget()
    q = queries(vectors, 1)[0]
    with store.conn:
        fast = search(store, q, "chunk", k=5, mode="vector", group="file")
    assert not vector_cache._warm[os.path.realpath(store.path)].ids.flags.aligned
    assert [(r.path, r.chunk_id) for r in fast] == file_truth(store, q, 5) and asked


def test_the_arrays_of_the_cache_file_are_aligned(tmp_path: Path) -> None:
    """numpy reads an unaligned memory map through a copy of the whole array (a lookup of
    a few ids among 10^6: 200 us instead of 3): whatever the header's length, the ids,
    documents and bits start at a multiple of ALIGN bytes."""
    store, vectors = make(tmp_path, n=600)
    path = vector_cache.cache_path(store.path)
    for removed in range(8):  # other row counts, other header lengths
        if removed:
            with store.transaction():
                store.delete_documents([f"/docs/a/{5 * (removed - 1):06d}.md"])
        vector_cache.forget()  # the file is loaded, brought up to date and written again
        vector_hits(store, vectors[0], 10)
        bits = vector_cache.load(path, DIMS)
        assert bits is not None and len(bits) == len(vectors) - PER_DOC * removed
        assert isinstance(bits.ids, np.memmap) and bits.ids.offset % vector_cache.ALIGN == 0
        assert all(a.flags.aligned for a in (bits.ids, bits.docs, bits.words))


def test_file_grouping_asks_sqlite_when_the_cache_is_newer(tmp_path: Path) -> None:
    """A reader whose snapshot is older than the process's cache (another Index searched
    after a write) groups with its own snapshot's documents: in the newer state two files'
    chunk ids were given to one new file."""
    store, vectors = make(tmp_path)
    reader = Store.open(store.path, readonly=True)
    q = vectors[2994] + 0.8 * vectors[2995]  # chunks 2995 and 2996: the last two files
    q /= np.linalg.norm(q)
    with reader.conn:
        want = file_truth(reader, q, 5)
        assert {"/docs/b/002990.md", "/docs/b/002995.md"} <= {path for path, _ in want}
        assert [(r.path, r.chunk_id) for r in search(reader, q, "x", k=5, mode="vector")] \
            == want
        with store.transaction():
            store.delete_documents(["/docs/b/002990.md", "/docs/b/002995.md"])
            chunks = [SimpleNamespace(text=f"merged {i}", start_line=i + 1, end_line=i + 1,
                                      start_page=None, end_page=None, n_tokens=2,
                                      hash=f"m{i}") for i in range(10)]
            store.write_document(path="/docs/z/merged.md", hash="y", size=1, mtime=0.0,
                                 kind="markdown", chunks=chunks,
                                 vectors=[vec_blob(v) for v in vectors[2990:3000]])
        (top,), = store.conn.execute("SELECT max(id) FROM chunks")
        assert top == 3000  # the ids were reused
        vector_hits(store, q, 10)  # the process's cache moves on to the writer's state
        assert vector_cache._warm[os.path.realpath(store.path)].state \
            == vector_cache.state_of(store) != vector_cache.state_of(reader)
        got = search(reader, q, "x", k=5, mode="vector")
        assert [(r.path, r.chunk_id) for r in got] == want
    reader.close()
