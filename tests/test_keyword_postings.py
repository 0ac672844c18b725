"""Keyword search's top k from per-phrase BM25 shares held in memory
(store_keyword_postings.py): the same rows, in the same order, with the same scores bit for bit
as FTS5's ``ORDER BY bm25 LIMIT k``, for English and CJK text, repeated texts (ties), phrases of
several tokens or none, an index changed between searches, and a cache too small for all."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

from gguf_embed import search as search_mod
from gguf_embed import store_keyword_cache as keyword_cache
from gguf_embed import store_keyword_postings as postings
from gguf_embed import store_keyword_topk as keyword_topk
from gguf_embed import vector_cache
from gguf_embed._vectors import vec_blob
from gguf_embed.keywords import CJK_WEIGHT, fts_query, query_terms
from gguf_embed.search import keyword_hits
from gguf_embed.store import Store

from .support.spy import answers
from .test_keyword_topk import DIMS, QUERIES, add

MORE = [*QUERIES, "x86_64 the word3", "foo_ word7 display", "数据库", "the", "zzzunknown",
        "word299 word298 word297 word296 word295 word294 word293 the a"]


def fast(store: Store, query: str, k: int) -> list[tuple[int, float]] | None:
    with store.conn:  # one snapshot, as search does
        state = vector_cache.state_of(store)
        found = postings.topk(store.conn, (str(store.path), state), query_terms(query), k,
                              (1.0, CJK_WEIGHT))
    return found


def check(store: Store) -> int:
    """Every query and k against FTS5's own query; how many the held postings answered."""
    answered = 0
    for query in MORE:
        for k in (1, 5, 50, 5000):
            today = store.keyword_matches(fts_query(query), k)
            got = fast(store, query, k)
            if got is None:
                continue
            answered += 1
            assert got == today, (query, k)  # ids, order, and scores to the last bit
    return answered


@pytest.fixture()
def store(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Store]:
    monkeypatch.setattr(search_mod, "KEYWORD_TOPK_FROM", 100)
    monkeypatch.setattr(postings, "CHEAP_ROWS", 10**9)  # read every phrase at first sight
    monkeypatch.setattr(postings, "FIRST_ROWS", 10**9)
    monkeypatch.setattr(keyword_cache, "_missed", lambda db: None)  # no INDEX.keywords here
    vector_cache.forget()
    keyword_topk._counts.clear()
    postings.forget()
    s = Store.open(tmp_path / "i.db")
    add(s, np.random.default_rng(5), 800, 0)  # 4,000 chunks, with repeated texts
    special = ["x86_64 foo_ the word3", "the x86_64 x86_64", "foo_ display 数据库 word7"]
    with s.transaction():
        for d, text in enumerate(special * 5):
            chunk = SimpleNamespace(text=text, start_line=1, end_line=1, start_page=None,
                                    end_page=None, n_tokens=4, hash=f"s{d}")
            s.write_document(path=f"/docs/s/{d}.md", hash="x", size=1, mtime=0.0,
                             kind="markdown", chunks=[chunk],
                             vectors=[vec_blob(np.ones(DIMS, np.float32))])
    yield s
    s.close()
    postings.forget()


def test_same_top_k_as_fts5_bit_for_bit(store: Store) -> None:
    assert check(store) == len(MORE) * 4  # every query answered, none left to FTS5
    assert check(store) == len(MORE) * 4  # and again from what is held


def test_common_phrases_are_read_in_the_background_on_second_sight(
        store: Store, monkeypatch: pytest.MonkeyPatch) -> None:
    rare = len(store.keyword_matches(fts_query("word250"), 10**6))
    assert 0 < rare < 100
    monkeypatch.setattr(postings, "CHEAP_ROWS", rare)
    monkeypatch.setattr(postings, "FIRST_ROWS", rare)
    query = "display the file word3"
    assert fast(store, query, 10) is None  # first sight, not cheap: nothing read
    assert postings._worker is None and not postings._pending and postings._bytes_held == 0
    assert fast(store, "word250", 10) == store.keyword_matches(fts_query("word250"), 10)
    assert rows_held() == rare  # cheap: read at once
    assert fast(store, query, 10) is None  # second sight: read by the background thread
    assert postings.wait(60)
    assert fast(store, query, 10) == store.keyword_matches(fts_query(query), 10)


def test_first_sight_reads_less_than_second(store: Store,
                                            monkeypatch: pytest.MonkeyPatch) -> None:
    rare = len(store.keyword_matches(fts_query("word250"), 10**6))
    monkeypatch.setattr(postings, "FIRST_ROWS", rare - 1)
    assert fast(store, "word250", 10) is None  # a one-shot search of it reads nothing
    assert postings._bytes_held == 0 and postings._worker is None
    assert fast(store, "word250", 10) == store.keyword_matches(fts_query("word250"), 10)


def test_a_background_read_of_a_state_gone_is_dropped(store: Store,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(postings, "CHEAP_ROWS", 50)
    query = "word1 and the word2 for a"
    fast(store, query, 10)
    with store.conn:
        old = vector_cache.state_of(store)
    add(store, np.random.default_rng(6), 20, 800)  # the index moves on
    postings._schedule((str(store.path), old), (1.0, CJK_WEIGHT),
                       dict.fromkeys(query_terms(query), 1))
    assert postings.wait(60)
    assert postings._bytes_held == 0  # what the thread saw was not the state asked for
    assert fast(store, query, 10) is None
    assert postings.wait(60)
    assert fast(store, query, 10) == store.keyword_matches(fts_query(query), 10)


def test_index_changed_between_searches(store: Store) -> None:
    check(store)
    held = postings._bytes_held
    assert held > 0
    add(store, np.random.default_rng(6), 200, 800)
    with store.transaction():
        store.delete_documents([f"/docs/a/{d:05d}.md" for d in range(0, 400, 2)])
    assert check(store) == len(MORE) * 4  # the old state's postings are never used
    live = {int(r[0]) for r in store.conn.execute("SELECT id FROM chunks")}
    for query in MORE:
        got = fast(store, query, 50)
        assert got is not None and all(i in live for i, _ in got)


def test_memory_bound(store: Store, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(postings, "MAX_BYTES", 30_000)
    assert check(store) == len(MORE) * 4  # reads a query asks for push older phrases out
    biggest = max(p.nbytes for p in postings._held.values())
    assert postings._bytes_held <= max(30_000, biggest)
    assert postings._bytes_held == sum(p.nbytes for p in postings._held.values())
    kinds = {(p.rows is None, p.codes is None) for p in postings._held.values()}
    assert (True, False) in kinds and (False, False) in kinds  # dense and sparse codes


def test_background_reads_only_fill_free_room(store: Store,
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(postings, "CHEAP_ROWS", 0)
    query = "display the file word3"
    assert fast(store, query, 10) is None
    assert fast(store, query, 10) is None
    assert postings.wait(60)
    held = dict(postings._held)
    assert len(held) == 4
    monkeypatch.setattr(postings, "MAX_BYTES", postings._bytes_held + 10)
    other = "word1 and the word2 for a"
    assert fast(store, other, 10) is None
    assert fast(store, other, 10) is None
    assert postings.wait(60)
    assert dict(postings._held) == held  # nothing pushed out, nothing new kept


def test_shares_kept_per_row_when_too_many_distinct(store: Store,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(postings, "MAX_CODES", 2)
    assert check(store) == len(MORE) * 4
    held = list(postings._held.values())
    assert sum(p.codes is None for p in held) >= 10  # their shares kept one per row
    assert all(len(p.values) - (p.rows is None) < 2 for p in held if p.codes is not None)


def test_hybrid_sums_the_keyword_half_beside_the_vector_half(
        store: Store, monkeypatch: pytest.MonkeyPatch) -> None:
    both = answers(monkeypatch, search_mod, "_both_at_once")
    rng = np.random.default_rng(9)
    for query in MORE:
        q = rng.standard_normal(DIMS).astype(np.float32)
        serial = [search_mod.vector_hits(store, q, 50), keyword_hits(store, query, 50)]
        assert search_mod.candidates(store, q, query, "hybrid", 50) == serial
        assert search_mod.candidates(store, q, query, "hybrid", 50, "/docs/a/*") == [
            search_mod.vector_hits(store, q, 50, "/docs/a/*"),
            keyword_hits(store, query, 50, "/docs/a/*")]
    assert both.count(True) == len(MORE)  # every query's words were held by then


def test_rowids_too_far_apart_go_to_fts5(store: Store, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(postings, "MAX_DENSE", 10)  # as if rowids ran past the array's limit
    q = np.ones(DIMS, np.float32)
    for query in ["display the file word3", "数据库 的 配置文件"]:
        assert fast(store, query, 10) is None
        today = [(i, -s) for i, s in store.keyword_matches(fts_query(query), 50)]
        assert keyword_hits(store, query, 50) == today
        assert search_mod.candidates(store, q, query, "hybrid", 50)[1] == today


def rows_held() -> int:
    return sum(p.count for p in postings._held.values())


def test_search_takes_it_and_keeps_the_results(store: Store,
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    answered = answers(monkeypatch, postings, "topk")
    for query in MORE:
        for glob in (None, "/docs/b/*"):
            today = [(i, -s) for i, s in store.keyword_matches(fts_query(query), 50, glob)]
            assert keyword_hits(store, query, 50, glob) == today
    assert answered and all(answered)  # every unfiltered search went through it
    assert len(answered) == len(MORE)  # a path filter goes the other way
