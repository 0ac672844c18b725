"""The caches beside an index (INDEX.bits, INDEX.keywords) from the attacker's side: whoever
can put a file there must not make a search hang (a FIFO), nor read through a symbolic link;
such a file is taken as missing, and a search that writes the cache anew replaces the FIFO or
the link itself (a rename), never its target."""

from __future__ import annotations

import os
import threading
from collections.abc import Callable
from pathlib import Path

import pytest

from gguf_embed import store_keyword_cache as kcache
from gguf_embed import store_keyword_file, vector_cache
from gguf_embed.search import vector_hits
from gguf_embed.store import Store

from .test_fast_search import fast_path, ids, make, queries, truth
from .test_keyword_cache import store, update

__all__ = ["fast_path", "store"]  # fixtures: the caches serve every search here


def returns_at_once(call: Callable[[], object], fifo: Path) -> object:
    """``call()``'s result, asserting it did not block on the FIFO (which is then opened for
    writing, so that a blocked reader is let go whatever the outcome)."""
    out: list[object] = []
    thread = threading.Thread(target=lambda: out.append(call()), daemon=True)
    thread.start()
    thread.join(10)
    blocked = thread.is_alive()
    if blocked:
        fd = os.open(fifo, os.O_WRONLY | os.O_NONBLOCK)
        os.close(fd)
        thread.join(10)
    assert not blocked, f"blocked on the FIFO {fifo}"
    return out[0]


def test_a_fifo_in_place_of_either_cache_is_taken_as_missing(tmp_path: Path) -> None:
    bits, words = tmp_path / "i.db.bits", tmp_path / "i.db.keywords"
    os.mkfifo(bits)
    os.mkfifo(words)
    assert returns_at_once(lambda: vector_cache.load(bits, 64), bits) is None
    assert returns_at_once(lambda: store_keyword_file.load(words), words) is None


def test_a_search_replaces_a_fifo_put_where_its_bits_go(tmp_path: Path) -> None:
    store, vectors = make(tmp_path, n=600)
    fifo = vector_cache.cache_path(store.path)
    os.mkfifo(fifo)
    q = queries(vectors, count=1)[0]
    hits = returns_at_once(lambda: vector_hits(store, q, 10), fifo)
    assert ids(hits) == truth(store, q, 10)  # type: ignore[arg-type]
    assert fifo.is_file() and not fifo.is_symlink()  # written anew, in its place


def test_a_cache_reached_through_a_link_is_never_read_and_the_link_is_replaced(
        tmp_path: Path) -> None:
    """A link at INDEX.bits to a valid cache file elsewhere (here: the index's own, moved
    away) is not followed; the search writes INDEX.bits anew and the link's target is
    left as it was."""
    store, vectors = make(tmp_path, n=600)
    q = queries(vectors, count=1)[0]
    vector_hits(store, q, 10)  # writes INDEX.bits
    path = vector_cache.cache_path(store.path)
    elsewhere = tmp_path / "elsewhere.bits"
    path.rename(elsewhere)
    before = elsewhere.read_bytes()
    path.symlink_to(elsewhere)
    assert vector_cache.load(path, store.dims or 0) is None
    assert vector_cache.load(elsewhere, store.dims or 0) is not None  # a valid file
    vector_cache.forget()
    assert ids(vector_hits(store, q, 10)) == truth(store, q, 10)
    assert not path.is_symlink() and path.is_file()
    assert elsewhere.read_bytes() == before


@pytest.mark.parametrize("kind", ["fifo", "link"])
def test_a_keywords_file_that_is_a_fifo_or_a_link_is_taken_as_missing(
        store: Store, kind: str) -> None:
    """``store``: test_keyword_cache's index of 4,000 chunks, whose INDEX.keywords is valid
    where it is written; moved away and replaced by a link to it (or by a FIFO), it is not
    read, and the next update writes a file in its place."""
    assert update(store)
    path = store_keyword_file.cache_path(store.path)
    elsewhere = path.with_name("elsewhere.keywords")
    path.rename(elsewhere)
    before = elsewhere.read_bytes()
    assert store_keyword_file.load(elsewhere) is not None  # a valid file
    if kind == "fifo":
        os.mkfifo(path)
    else:
        path.symlink_to(elsewhere)
    assert returns_at_once(lambda: store_keyword_file.load(path), path) is None
    kcache.forget()
    assert returns_at_once(lambda: update(store), path)
    assert path.is_file() and not path.is_symlink()
    assert store_keyword_file.load(path) is not None
    assert elsewhere.read_bytes() == before
