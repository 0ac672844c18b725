"""Keyword search with the common words' BM25 ingredients from ``INDEX.keywords``
(store_keyword_cache.py, store_keyword_stats.py, store_keyword_rank.py): the same rows, order
and scores bit for bit as FTS5's ``ORDER BY bm25 LIMIT k``, after inserts, deletes and reused
rowids; a stale, foreign, damaged, half-written or hostile file is never believed."""

from __future__ import annotations

import dataclasses
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest

from gguf_embed import Index, vector_cache
from gguf_embed import search as search_mod
from gguf_embed import store_keyword_cache as kcache
from gguf_embed import store_keyword_file as kfile
from gguf_embed import store_keyword_postings as postings
from gguf_embed import store_keyword_rank as krank
from gguf_embed import store_keyword_stats as kstats
from gguf_embed import store_keyword_topk as keyword_topk
from gguf_embed._vectors import vec_blob
from gguf_embed.keywords import fts_query, query_terms
from gguf_embed.search import FTS_WEIGHTS, keyword_hits
from gguf_embed.store import Store
from gguf_embed.testing import FakeEngine

from .support.spy import answers
from .test_keyword_postings import MORE
from .test_keyword_topk import DIMS, add

KS = (1, 5, 50, 5000)


def cached(store: Store, query: str, k: int) -> list[tuple[int, float]] | None:
    with store.conn:  # one snapshot, as search does
        state = vector_cache.state_of(store)
        return kcache.topk(store.conn, store.path, (str(store.path), state),
                           query_terms(query), k, FTS_WEIGHTS)


def update(store: Store) -> bool:
    with store.conn:
        return kcache.update(store.conn, store.path)


def check(store: Store) -> int:
    """Every query and k against FTS5's own query; how many the cache answered."""
    answered = 0
    for query in MORE:
        for k in KS:
            got = cached(store, query, k)
            if got is None:
                continue
            answered += 1
            assert got == store.keyword_matches(fts_query(query), k), (query, k)
    return answered


def file_of(store: Store) -> Path:
    return kstats.cache_path(store.path)


@pytest.fixture()
def store(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Store]:
    monkeypatch.setattr(search_mod, "KEYWORD_TOPK_FROM", 100)
    monkeypatch.setattr(kcache, "MIN_ROWS", 100)  # the common words of 4,000 chunks
    monkeypatch.setattr(kcache, "_missed", lambda db: None)  # no background updates here
    vector_cache.forget()
    keyword_topk._counts.clear()
    postings.forget()
    kcache.forget()
    s = Store.open(tmp_path / "i.db")
    add(s, np.random.default_rng(5), 800, 0)  # 4,000 chunks, with repeated texts
    yield s
    s.close()
    postings.forget()
    kcache.forget()


def test_same_top_k_as_fts5_bit_for_bit(store: Store) -> None:
    assert cached(store, "display the file word3", 10) is None  # no file yet
    assert update(store) and file_of(store).exists()
    stats = kstats.load(file_of(store))
    assert stats is not None and {"the", "file", "displai", "文件"} <= set(stats.phrases)
    assert {p.rows is None for p in stats.phrases.values()} == {True, False}  # dense, sparse
    kcache.forget()  # as a fresh process: read from the file
    answered = check(store)
    assert answered >= (len(MORE) - 4) * len(KS)  # all but the queries of rare words alone
    assert check(store) == answered  # and again, checked once


@pytest.mark.parametrize("heavy", [0.0, 0.5, 2.0])
def test_maxscore_and_the_full_sum_agree_with_fts5(store: Store, heavy: float,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(krank, "HEAVY_SHARE", heavy)  # 2.0: every share of every row summed
    settled: list[bool] = []
    real = krank._rounds

    def spy(*args: Any, **kwargs: Any) -> Any:
        found = real(*args, **kwargs)
        settled.append(found[0] is not None)
        return found

    monkeypatch.setattr(krank, "_rounds", spy)
    update(store)
    assert check(store) >= (len(MORE) - 4) * len(KS)
    if heavy < 1:  # the common words bounded, and that settled some queries
        assert True in settled


def test_without_the_size_table(store: Store, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(kcache, "TABLE_SIZES", 1)  # shares computed row by row
    update(store)
    kcache.forget()
    assert check(store) >= (len(MORE) - 4) * len(KS)


def test_hybrid_and_keyword_search_take_the_cache(store: Store,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    update(store)
    calls = answers(monkeypatch, kcache, "topk")
    for query in MORE:
        today = [(i, -s) for i, s in store.keyword_matches(fts_query(query), 50)]
        assert keyword_hits(store, query, 50) == today
    assert calls.count(True) >= len(MORE) - 4


def writes(store: Store) -> set[int]:
    """Inserts, deletes, and the newest chunks deleted then written again: the rowids that
    came back."""
    add(store, np.random.default_rng(6), 20, 800)
    newest = {int(r[0]) for r in store.conn.execute(
        "SELECT c.id FROM chunks c JOIN documents d ON d.id = c.doc_id WHERE d.path >= ?",
        ("/docs/a/00810.md",)) if int(r[0]) > 4000}
    with store.transaction():
        store.delete_documents([f"/docs/a/{d:05d}.md" for d in range(0, 200, 4)])
        store.delete_documents([f"/docs/{'ab'[d % 2]}/{d:05d}.md" for d in range(810, 820)])
    add(store, np.random.default_rng(7), 12, 810)
    live = {int(r[0]) for r in store.conn.execute("SELECT id FROM chunks")}
    return newest & live


def test_refreshed_after_inserts_deletes_and_reused_rowids(
        store: Store, monkeypatch: pytest.MonkeyPatch) -> None:
    update(store)
    assert len(writes(store)) >= 40  # rowids deleted and given again to new chunks
    assert check(store) == 0  # stale: never used
    live = {int(r[0]) for r in store.conn.execute("SELECT id FROM chunks")}
    refreshed = answers(monkeypatch, kstats, "refresh")
    assert update(store)
    assert refreshed == [True]  # brought up to date, not rebuilt
    kcache.forget()
    assert check(store) >= (len(MORE) - 4) * len(KS)
    for query in MORE:
        got = cached(store, query, 5000) or []
        assert all(i in live for i, _ in got)  # no deleted chunk
    # the same as a file built from scratch at this state
    refreshed_stats = kstats.load(file_of(store))
    with store.conn:
        built = kstats.build(store.conn, kcache.MIN_ROWS)
    assert refreshed_stats is not None and built is not None
    assert np.array_equal(refreshed_stats.sizes, built.sizes)
    for token, p in built.phrases.items():
        q = refreshed_stats.phrases[token]
        rows_p = np.flatnonzero(p.codes) if p.rows is None else p.rows
        rows_q = np.flatnonzero(q.codes) if q.rows is None else q.rows
        assert np.array_equal(rows_p, rows_q), token
        pairs_p = p.pairs[(p.codes[rows_p] if p.rows is None else p.codes).astype(int)]
        pairs_q = q.pairs[(q.codes[rows_q] if q.rows is None else q.codes).astype(int)]
        assert np.array_equal(pairs_p, pairs_q), token


def test_a_stale_or_foreign_file_is_ignored_and_rewritten(store: Store,
                                                          tmp_path: Path) -> None:
    update(store)
    old = tmp_path / "old.keywords"
    shutil.copy(file_of(store), old)
    writes(store)
    update(store)
    shutil.copy(old, file_of(store))  # a file from an earlier state of this index
    kcache.forget()
    assert check(store) == 0
    other = Store.open(tmp_path / "other.db")  # and one of another index
    add(other, np.random.default_rng(5), 800, 0)
    with other.conn:
        assert kcache.update(other.conn, other.path)
    other.close()
    shutil.copy(kstats.cache_path(other.path), file_of(store))
    kcache.forget()
    assert check(store) == 0  # same texts, same rowids: another epoch
    assert update(store)
    assert check(store) >= (len(MORE) - 4) * len(KS)


def _damage(path: Path, how: str) -> None:
    data = bytearray(path.read_bytes())
    if how == "truncated":
        data = data[:len(data) // 2]
    elif how == "flipped":  # a byte in the last phrase's data
        data[-64] ^= 0xFF
    elif how == "header":
        data[20] ^= 0xFF
    elif how == "garbage":
        data = bytearray(os.urandom(len(data)))
    elif how == "empty":
        data = bytearray()
    path.write_bytes(bytes(data))


@pytest.mark.parametrize("how", ["truncated", "flipped", "header", "garbage", "empty"])
def test_a_damaged_file_is_ignored_and_rewritten(store: Store, how: str) -> None:
    update(store)
    _damage(file_of(store), how)
    kcache.forget()
    for query in MORE:  # no error, and FTS5's answer through the other paths
        today = [(i, -s) for i, s in store.keyword_matches(fts_query(query), 50)]
        assert keyword_hits(store, query, 50) == today
    assert update(store)
    assert kstats.load(file_of(store)) is not None
    kcache.forget()
    assert check(store) >= (len(MORE) - 4) * len(KS)


def test_a_folder_that_cannot_be_written_keeps_it_in_memory(
        store: Store, monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(*args: Any, **kwargs: Any) -> Any:
        raise PermissionError("read-only folder")

    monkeypatch.setattr(tempfile, "mkstemp", refuse)
    assert update(store)
    assert not file_of(store).exists()
    assert not [p for p in file_of(store).parent.iterdir() if ".keywords" in p.name]
    assert check(store) >= (len(MORE) - 4) * len(KS)


def test_a_run_killed_while_writing_leaves_no_file_used(
        store: Store, monkeypatch: pytest.MonkeyPatch) -> None:
    update(store)
    good = file_of(store).read_bytes()
    writes(store)

    class Killed(BaseException):
        pass

    real_fsync = os.fsync

    def die(fd: int) -> None:
        raise Killed

    monkeypatch.setattr(kfile.os, "fsync", die)
    with pytest.raises(Killed):
        update(store)
    monkeypatch.setattr(kfile.os, "fsync", real_fsync)
    assert file_of(store).read_bytes() == good  # the old one, whole; the new one a .tmp
    kcache.forget()
    assert check(store) == 0  # stale: not used
    assert update(store)
    assert check(store) >= (len(MORE) - 4) * len(KS)


def _forged(store: Store, change: Any) -> None:
    """A file written by someone else, checksums and all, with ``change`` made to it."""
    with store.conn:
        stats = kstats.build(store.conn, kcache.MIN_ROWS)
    assert stats is not None
    stats = change(stats)
    assert kstats.save(stats, file_of(store))
    kcache.forget()


def _replace(stats: kstats.Stats, token: str, **fields: Any) -> kstats.Stats:
    phrases = dict(stats.phrases)
    phrases[token] = dataclasses.replace(phrases[token], **fields)
    return dataclasses.replace(stats, phrases=phrases, checks={})


def _as_sparse(p: kstats.Phrase) -> kstats.Phrase:
    if p.rows is None:
        rows = np.flatnonzero(p.codes).astype(np.int32)
        return kstats.Phrase(len(rows), rows, p.codes[rows], p.pairs)
    return p


def _no_match(store: Store, query: str) -> list[int]:
    hits = {i for i, _ in store.keyword_matches(fts_query(query), 10**6)}
    return [int(r[0]) for r in store.conn.execute("SELECT id FROM chunks ORDER BY id")
            if int(r[0]) not in hits]


def _lie_rows(store: Store, token: str, extra: list[int], boost: bool) -> Any:
    def change(stats: kstats.Stats) -> kstats.Stats:
        p = _as_sparse(stats.phrases[token])
        assert p.rows is not None
        rows = np.unique(np.concatenate([p.rows, np.array(extra, dtype=np.int32)]))
        codes = np.ones(len(rows), dtype=p.codes.dtype)
        pairs = p.pairs.copy()
        if boost:  # the rows it adds hold the word many times: the best shares
            pairs = np.concatenate([pairs, [[60, 0]]])
            codes[np.isin(rows, extra)] = len(pairs) - 1
        return _replace(stats, token, rows=rows, codes=codes, pairs=pairs, count=len(rows))
    return change


def _search_is_fts5s(store: Store, never: set[int], alone: str = "the") -> None:
    """Every query's keyword hits are FTS5's; ``alone`` (whose rows were forged) never
    returns a chunk of ``never``."""
    for query in [*MORE, alone]:
        for k in (5, 50):
            today = [(i, -s) for i, s in store.keyword_matches(fts_query(query), k)]
            got = keyword_hits(store, query, k)
            if query == alone:
                assert not {i for i, _ in got} & never
            assert got == today


def test_a_forged_file_cannot_return_a_chunk_that_does_not_match(store: Store) -> None:
    update(store)
    strangers = _no_match(store, "display")[:5]
    assert strangers
    _forged(store, _lie_rows(store, "displai", strangers, boost=True))
    # "display" alone, and with others: the forged rows would rank first; never returned
    _search_is_fts5s(store, set(strangers), "display")


def test_a_forged_file_cannot_return_a_deleted_chunk(store: Store) -> None:
    update(store)
    gone = [int(r[0]) for r in store.conn.execute(
        "SELECT id FROM chunks WHERE doc_id = (SELECT id FROM documents WHERE path = ?)",
        ("/docs/b/00001.md",))]
    with store.transaction():
        store.delete_documents(["/docs/b/00001.md"])
    with store.conn:
        log = vector_cache.state_of(store)
    assert log is not None

    def change(stats: kstats.Stats) -> kstats.Stats:
        stats = _lie_rows(store, "the", gone, boost=True)(stats)
        sizes = np.array(stats.sizes)
        sizes[gone] = 3  # sizes too, so that its shares are computed
        state = kstats.State(log.epoch, log.inserted, log.deleted)
        return dataclasses.replace(stats, sizes=sizes, state=state)

    _forged(store, change)
    _search_is_fts5s(store, set(gone))


@pytest.mark.parametrize("lie", ["huge counts", "many large counts", "rows past the end",
                                 "rows unsorted", "codes past the pairs", "count", "no size",
                                 "dense too long"])
def test_a_forged_file_with_impossible_values_is_ignored(store: Store, lie: str) -> None:
    update(store)

    def change(stats: kstats.Stats) -> kstats.Stats:
        p = _as_sparse(stats.phrases["the"])
        assert p.rows is not None
        if lie == "huge counts":
            return _replace(stats, "the", pairs=np.array([[0, 0], [10**12, 10**12]]),
                            codes=np.ones(len(p.rows), dtype=np.uint8), rows=p.rows)
        if lie == "many large counts":  # each possible, together hours of adding up
            pairs = np.array([[0, 0]] + [[90_000 - i, 0] for i in range(250)])
            return _replace(stats, "the", pairs=pairs, rows=p.rows,
                            codes=(np.arange(len(p.rows)) % 250 + 1).astype(np.uint8))
        if lie == "rows past the end":
            rows = p.rows.copy()
            rows[-1] = 10**9
            return _replace(stats, "the", rows=rows, codes=p.codes)
        if lie == "rows unsorted":
            return _replace(stats, "the", rows=p.rows[::-1].copy(), codes=p.codes[::-1].copy())
        if lie == "codes past the pairs":
            codes = p.codes.copy()
            codes[0] = 200
            return _replace(stats, "the", rows=p.rows, codes=codes)
        if lie == "count":
            return _replace(stats, "the", rows=p.rows, codes=p.codes, count=p.count + 7)
        if lie == "no size":
            sizes = np.array(stats.sizes)
            sizes[int(p.rows[0])] = kstats.NO_ROW
            return dataclasses.replace(stats, sizes=sizes)
        dense = np.zeros(len(stats.sizes) + 50, dtype=np.uint8)
        dense[p.rows] = p.codes
        return _replace(stats, "the", rows=None, codes=dense)

    _forged(store, change)
    forged = kstats.load(file_of(store))
    if forged is not None:  # caught when the word is first used, before any adding up
        with pytest.raises(ValueError):
            if not kcache._valid(forged, "the", forged.phrases["the"]):
                raise ValueError("out of shape")
    assert cached(store, "display the file word3", 10) is None
    _search_is_fts5s(store, set())


def test_an_index_run_writes_it_only_for_a_large_index(tmp_path: Path,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    kcache.forget()
    folder = tmp_path / "docs"
    folder.mkdir()
    rng = np.random.default_rng(3)
    from .test_keyword_topk import text
    for i in range(40):
        (folder / f"{i}.md").write_text(text(rng) + "\n", encoding="utf-8")
    db = tmp_path / "i.db"
    with Index(db, FakeEngine()) as index:
        index.add([folder])
    assert not kstats.cache_path(db).exists()  # a small index: FTS5 alone is fast
    monkeypatch.setattr(search_mod, "KEYWORD_TOPK_FROM", 10)
    monkeypatch.setattr(search_mod, "EXACT_BELOW", 10**9)
    monkeypatch.setattr(kcache, "MIN_ROWS", 5)
    with Index(db, FakeEngine()) as index:
        (folder / "new.md").write_text("the file display\n", encoding="utf-8")
        index.add([folder])
        assert kstats.cache_path(db).exists()
        store = index.store
        for n, step in enumerate(("added", "changed (watch)", "changed again")):
            kcache.forget()
            for query in ["display the file", "the a", "word3 the"]:
                today = store.keyword_matches(fts_query(query), 10)
                assert keyword_hits(store, query, 10) == [(i, -s) for i, s in today], step
                assert cached(store, query, 10) == today, step
            (folder / "new.md").write_text("the the file\n" * (n + 2), encoding="utf-8")
            (folder / f"{n}.md").unlink()
            index.update([folder / "new.md", folder / f"{n}.md"], [folder])
            assert kstats.load(kstats.cache_path(db)) is not None
        assert index.remove([folder / "new.md", folder / "7.md"]) == 2
        kcache.forget()
        for query in ["display the file", "the a", "word3 the"]:
            assert cached(store, query, 10) == store.keyword_matches(fts_query(query), 10)


def test_rowids_far_apart_make_no_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(kstats, "MAX_ROWID", 100)
    s = Store.open(tmp_path / "i.db")
    add(s, np.random.default_rng(5), 40, 0)  # 200 chunks
    with s.conn:
        assert not kcache.update(s.conn, s.path, min_rows=5)
    assert not kstats.cache_path(s.path).exists()
    s.close()


def test_cjk_counts_come_from_their_own_column(store: Store) -> None:
    with store.transaction():
        chunk = SimpleNamespace(text="文件 文件 the 文件系统 file", start_line=1, end_line=1,
                                start_page=None, end_page=None, n_tokens=4, hash="cjk")
        store.write_document(path="/docs/cjk.md", hash="x", size=1, mtime=0.0,
                             kind="markdown", chunks=[chunk],
                             vectors=[vec_blob(np.ones(DIMS, np.float32))])
    update(store)
    stats = kstats.load(file_of(store))
    assert stats is not None
    rowid = int(store.conn.execute("SELECT max(id) FROM chunks").fetchone()[0])
    p = stats.phrases["文件"]
    code = p.codes[rowid] if p.rows is None else p.codes[np.searchsorted(p.rows, rowid)]
    assert p.pairs[int(code)].tolist() == [0, 3]  # three bigrams in the CJK column
    assert check(store) >= (len(MORE) - 4) * len(KS)


def test_a_long_running_process_brings_a_stale_file_up_to_date(
        store: Store, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.undo()  # the background updates too
    monkeypatch.setattr(search_mod, "KEYWORD_TOPK_FROM", 100)
    monkeypatch.setattr(kcache, "MIN_ROWS", 100)
    update(store)
    writes(store)  # by a writer that left the file behind (an older version, a failed build)
    query = "display the file word3"
    assert cached(store, query, 10) is None  # a one-shot search: nothing more
    assert kcache.wait(60) and not kcache._workers
    assert cached(store, query, 10) is None  # searched again: updated in the background
    assert kcache.wait(60)
    kcache.forget()
    assert check(store) >= (len(MORE) - 4) * len(KS)  # from the file, rewritten


def test_a_failing_build_does_not_fail_the_index_run(store: Store,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    import apsw

    def broken(*args: Any, **kwargs: Any) -> Any:
        raise apsw.SQLError("no such module: fts5vocab")

    monkeypatch.setattr(kstats, "build", broken)
    assert not update(store)  # no file, and no error out of the run that wrote the index
    assert not file_of(store).exists()
    _search_is_fts5s(store, set())


def test_a_long_running_process_still_holds_the_words_it_searches_twice(
        store: Store, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(postings, "CHEAP_ROWS", 0)  # nothing read in the foreground
    update(store)
    query = "display the file word3"
    with store.conn:
        key = (str(store.path), vector_cache.state_of(store))
    today = [(i, -s) for i, s in store.keyword_matches(fts_query(query), 50)]
    assert keyword_hits(store, query, 50) == today  # answered from INDEX.keywords
    assert postings.wait(60) and postings.held(key, query_terms(query), FTS_WEIGHTS) is None
    assert keyword_hits(store, query, 50) == today  # seen before: read in the background
    assert postings.wait(60)
    assert postings.held(key, query_terms(query), FTS_WEIGHTS) is not None  # hybrid's half
