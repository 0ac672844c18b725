"""INDEX.bits from the attacker's side: whoever can write the file beside an index can make its
sign-bit cache say anything, and a damaged one says something wrong.  Either way it may only
change which candidates are rescored: never let a chunk outside the path filter, nor a deleted
chunk, be returned.

* two chunks' document ids swapped in place (the probe's attack: a wrapping sum does not see
  it) are caught by the order-sensitive checksum, and the cache is rebuilt from SQLite;
* a file rewritten with every checksum made valid again is loaded, and the rows returned are
  still filtered by SQLite (search.py reads each one's document path under the filter)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from gguf_embed import vector_cache
from gguf_embed.search import search
from gguf_embed.store import Store
from gguf_embed.vector_cache import Bits

from .test_fast_search import DIMS, fast_path, make  # noqa: F401  (fast_path: a fixture)

INSIDE = "/docs/a/*"


def target(store: Store) -> tuple[int, np.ndarray]:
    """A chunk outside ``INSIDE`` (folder b) and its own vector: the query that finds it."""
    chunk_id, blob = store.conn.execute(
        "SELECT c.id, v.embedding FROM chunks c JOIN documents d ON d.id = c.doc_id "
        "JOIN chunk_vectors v ON v.chunk_id = c.id WHERE d.path GLOB '/docs/b/*' "
        "ORDER BY c.id LIMIT 1 OFFSET 7").fetchone()
    return int(chunk_id), np.frombuffer(blob, dtype="<f4").copy()


def warm(store: Store, q: np.ndarray) -> Bits:
    """Search once (INDEX.bits is written beside the index), then forget the process's copy:
    the next search loads the file, as a one-shot CLI search does."""
    search(store, q, "query", k=5, mode="vector")
    vector_cache.forget()
    bits = vector_cache.load(vector_cache.cache_path(store.path), DIMS)
    assert bits is not None  # copied: the file is a memory map, and is rewritten next
    return Bits(bits.state, DIMS, np.array(bits.ids), np.array(bits.docs),
                np.array(bits.words))


def swapped_docs(bits: Bits, chunk_id: int) -> tuple[np.ndarray, int, int]:
    """The documents array with ``chunk_id``'s document swapped with the first chunk's (a
    document in folder a), and the two rows."""
    row = int(np.searchsorted(bits.ids, chunk_id))
    assert bits.ids[row] == chunk_id and bits.docs[row] != bits.docs[0]
    docs = np.array(bits.docs)
    docs[[0, row]] = docs[[row, 0]]
    return docs, 0, row


def results(store: Store, q: np.ndarray, glob: str | None) -> list[tuple[str, int]]:
    found = []
    for mode in ("vector", "hybrid"):
        for group in ("chunk", "file"):
            found += [(r.path, r.chunk_id) for r in search(
                store, q, "chunk", k=10, mode=mode, path_glob=glob, group=group)]
    return found


def test_documents_swapped_in_place_are_refused_and_rebuilt(tmp_path: Path) -> None:
    store, _ = make(tmp_path)
    chunk_id, q = target(store)
    bits = warm(store, q)
    path = vector_cache.cache_path(store.path)
    data = bytearray(path.read_bytes())
    width = bits.words.shape[1]
    docs_at = len(data) - len(bits) * (16 + 8 * width) + 8 * len(bits)
    _, a, b = swapped_docs(bits, chunk_id)
    first, second = docs_at + 8 * a, docs_at + 8 * b
    data[first:first + 8], data[second:second + 8] = data[second:second + 8], \
        data[first:first + 8]
    path.write_bytes(bytes(data))  # the sums of the ids, documents and bits are unchanged
    assert vector_cache.load(path, DIMS) is None  # the documents' order is checked
    found = results(store, q, INSIDE)
    assert found and all(p.startswith("/docs/a/") for p, _ in found)
    reloaded = vector_cache.load(path, DIMS)  # rebuilt from SQLite and written again
    assert reloaded is not None
    np.testing.assert_array_equal(reloaded.docs, bits.docs)


def test_a_rewritten_cache_with_valid_checksums_cannot_widen_the_path_filter(
        tmp_path: Path) -> None:
    store, _ = make(tmp_path)
    chunk_id, q = target(store)
    bits = warm(store, q)
    docs, _, _ = swapped_docs(bits, chunk_id)
    path = vector_cache.cache_path(store.path)
    vector_cache.save(Bits(bits.state, DIMS, bits.ids, docs, bits.words), path)
    forged = vector_cache.load(path, DIMS)
    assert forged is not None  # every checksum is valid: the cache believes it
    found = results(store, q, INSIDE)
    assert found and all(p.startswith("/docs/a/") for p, _ in found), found
    assert chunk_id not in {c for _, c in found}
    # unfiltered, the chunk is found where it really is
    assert (store.chunk_rows([chunk_id])[chunk_id].path, chunk_id) in results(store, q, None)


@pytest.mark.parametrize("glob", [None, "/docs/b/*"])
def test_a_cache_claiming_deleted_chunks_never_returns_them(tmp_path: Path,
                                                            glob: str | None) -> None:
    store, _ = make(tmp_path)
    chunk_id, q = target(store)
    bits = warm(store, q)
    (doc_path,), = store.conn.execute(
        "SELECT d.path FROM chunks c JOIN documents d ON d.id = c.doc_id WHERE c.id = ?",
        (chunk_id,))
    gone = [int(r[0]) for r in store.conn.execute(
        "SELECT c.id FROM chunks c JOIN documents d ON d.id = c.doc_id WHERE d.path = ?",
        (doc_path,))]
    with store.transaction():
        assert store.delete_documents([doc_path]) == 1
    # the old bits (still holding the deleted chunks) relabelled as the file's state now
    now = vector_cache.state_of(store)
    assert now is not None and now != bits.state
    vector_cache.save(Bits(now, DIMS, bits.ids, bits.docs, bits.words),
                      vector_cache.cache_path(store.path))
    vector_cache.forget()
    found = results(store, q, glob)
    assert found and not {c for _, c in found} & set(gone)
    assert doc_path not in {p for p, _ in found}
