"""The read path of vector search at scale: ``Store.vectors`` (one blob handle moved from row
to row) against plain SQL, and the sign bits scanned where they lie (a memory-mapped
``INDEX.bits``, a path filter's rows) against the exact scan."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from gguf_embed import vector_cache
from gguf_embed.errors import IndexFileError
from gguf_embed.search import vector_hits
from gguf_embed.store import Store

from .test_fast_search import DIMS, fast_path, ids, make, queries, truth

__all__ = ["fast_path"]  # the autouse fixture: the cache serves every search here


def sql_vectors(store: Store, wanted: list[int]) -> tuple[list[int], np.ndarray]:
    rows = store.conn.execute("SELECT chunk_id, embedding FROM chunk_vectors ORDER BY chunk_id"
                              ).fetchall()
    keep = [(i, blob) for i, blob in rows if i in set(wanted)]
    matrix = np.frombuffer(b"".join(b for _, b in keep), dtype="<f4").reshape(len(keep), DIMS)
    return [i for i, _ in keep], matrix


def test_vectors_reads_what_sql_reads_skipping_missing_and_repeated_ids(tmp_path: Path) -> None:
    store, _ = make(tmp_path, n=400)
    with store.transaction():
        store.delete_documents(["/docs/a/000005.md"])  # chunks 6-10 are gone
    wanted = [300, 7, 1, 300, 9_999, 8, 42, 2]
    found, matrix = store.vectors(wanted)
    want_ids, want = sql_vectors(store, wanted)
    assert found == want_ids == [1, 2, 42, 300]
    np.testing.assert_array_equal(matrix, want)
    assert matrix.dtype == np.dtype("<f4") and matrix.flags.c_contiguous
    assert store.vectors([])[0] == [] and store.vectors([])[1].shape == (0, DIMS)
    assert store.vectors([9_999, 7])[1].shape == (0, DIMS)


def test_a_vector_of_the_wrong_size_is_an_index_error_naming_the_chunk(tmp_path: Path) -> None:
    store, _ = make(tmp_path, n=100)
    with store.transaction():
        store.conn.execute("UPDATE chunk_vectors SET embedding = zeroblob(12) WHERE chunk_id = 5")
    with pytest.raises(IndexFileError, match="chunk 5's vector has 12 bytes"):
        store.vectors([4, 5, 6])


def test_bits_loaded_from_the_file_are_scanned_in_place(tmp_path: Path) -> None:
    store, vectors = make(tmp_path)
    qs = queries(vectors, 8)
    warm = [ids(vector_hits(store, q, 10)) for q in qs]  # made from SQLite, file written
    vector_cache.forget()
    with store.conn:
        bits = vector_cache.current(store)
    assert bits is not None and isinstance(bits.words, np.memmap)  # the file, not a copy
    for q, before in zip(qs, warm, strict=True):
        hits = ids(vector_hits(store, q, 10))
        assert hits == before == truth(store, q, 10)
        assert ids(vector_hits(store, q, 10, "/docs/a/*")) == truth(store, q, 10, "/docs/a/*")


@pytest.mark.parametrize("faiss", [True, False])
def test_a_path_filter_never_returns_a_chunk_outside_it(tmp_path: Path,
                                                       monkeypatch: pytest.MonkeyPatch,
                                                       faiss: bool) -> None:
    if not faiss:
        monkeypatch.setattr(vector_cache, "_faiss_knn", lambda: None)
    store, vectors = make(tmp_path)
    inside = {i for i, _ in store.conn.execute(
        "SELECT c.id, d.path FROM chunks c JOIN documents d ON d.id = c.doc_id "
        "WHERE d.path GLOB '/docs/b/*'")}
    for q in queries(vectors, 8):
        hits = ids(vector_hits(store, q, 50, "/docs/b/*"))
        assert len(hits) == 50 and set(hits) <= inside
        assert hits == truth(store, q, 50, "/docs/b/*")


@pytest.mark.parametrize("faiss", [True, False])
def test_a_mask_with_no_rows_finds_nothing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                          faiss: bool) -> None:
    if not faiss:
        monkeypatch.setattr(vector_cache, "_faiss_knn", lambda: None)
    store, vectors = make(tmp_path, n=200)
    with store.conn:
        bits = vector_cache.current(store)
    assert bits is not None
    none = np.zeros(len(bits), dtype=bool)
    assert bits.nearest(vectors[0], 10, none).tolist() == []
    assert bits.nearest(vectors[0], 10).tolist()  # the same bits find rows without a mask


@pytest.mark.parametrize("dims", [64, 384, 1024, 1088, 2560])
def test_numpys_scan_finds_the_rows_fewest_bits_away(dims: int,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    """The numpy scan (rows of up to 16 words summed column by column, wider ones by
    np.sum) keeps every row nearer than the cut-off, at every width, as a plain popcount
    over the whole rows says, with and without a mask."""
    monkeypatch.setattr(vector_cache, "_scanner", lambda words: None)
    rng = np.random.default_rng(dims)
    n = 3_000
    signs = rng.standard_normal((n, dims)).astype(np.float32)
    words = vector_cache._words(np.packbits(signs > 0, axis=1, bitorder="little"))
    bits = vector_cache.Bits(state=None, dims=dims, ids=np.arange(n, dtype=np.int64) * 3,  # type: ignore[arg-type]
                             docs=np.zeros(n, dtype=np.int64), words=words)
    query = rng.standard_normal(dims).astype(np.float32)
    distance = ((signs > 0) != (query > 0)).sum(axis=1)
    mask = rng.random(n) < 0.5
    for allowed in (None, mask):
        got = bits.nearest(query, 20, allowed) // 3
        pool = np.flatnonzero(allowed) if allowed is not None else np.arange(n)
        cut = np.sort(distance[pool])[19]
        assert set(pool[distance[pool] < cut]) <= set(got.tolist())
        assert (distance[got] <= cut).all() and 20 <= len(got) <= 40
        if allowed is not None:
            assert allowed[got].all()
