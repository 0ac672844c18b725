"""Keyword search's exact top k without scoring every match (keyword_topk.py): the same rows,
in the same order, with the same scores as FTS5's ``ORDER BY bm25 LIMIT k`` (today's query),
for English and CJK text, path filters, repeated texts (ties), and an index that changed
between searches (the cached document counts)."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

from gguf_embed import search as search_mod
from gguf_embed import store_keyword_cache as keyword_cache
from gguf_embed import store_keyword_postings as keyword_postings
from gguf_embed import store_keyword_topk as keyword_topk
from gguf_embed import vector_cache
from gguf_embed._vectors import vec_blob
from gguf_embed.keywords import CJK_WEIGHT, fts_query, query_terms
from gguf_embed.search import keyword_hits
from gguf_embed.store import Store

from .support.spy import answers

DIMS = 8
COMMON = ["the", "a", "to", "and", "of", "file", "display", "for", "文件"]
RARE = [f"word{i}" for i in range(300)] + ["running", "runs", "café", "naïve", "x86"]
CJK = ["数据库", "文件系统", "显示", "配置文件", "ファイル", "表示する", "파일을", "보여줍니다"]


def text(rng: np.random.Generator) -> str:
    words = [w for w in COMMON if rng.random() < 0.8]
    words += [RARE[int(i)] for i in rng.zipf(1.3, int(rng.integers(1, 12))) % len(RARE)]
    if rng.random() < 0.3:
        words += [CJK[int(i)] for i in rng.integers(0, len(CJK), int(rng.integers(1, 4)))]
    words += [COMMON[int(i)] for i in rng.integers(0, len(COMMON), int(rng.integers(0, 30)))]
    rng.shuffle(words)
    return " ".join(words)


def add(store: Store, rng: np.random.Generator, docs: int, first: int) -> None:
    store.ensure_vectors(DIMS)
    with store.transaction():
        for d in range(first, first + docs):
            texts = [text(rng) for _ in range(5)]
            if d % 7 == 0:
                texts = [texts[0]] * 5  # repeated chunks: tied scores
            chunks = [SimpleNamespace(text=t, start_line=i + 1, end_line=i + 1, start_page=None,
                                      end_page=None, n_tokens=len(t.split()), hash=f"h{d}-{i}")
                      for i, t in enumerate(texts)]
            store.write_document(path=f"/docs/{'ab'[d % 2]}/{d:05d}.md", hash="x", size=1,
                                 mtime=0.0, kind="markdown", chunks=chunks,
                                 vectors=[vec_blob(np.ones(DIMS, np.float32))] * len(chunks))


QUERIES = ["display the file word3", "word1 and the word2 for a", "word17 of the running file",
           "数据库 的 配置文件", "显示 file word5", "ファイル を 表示する",
           "파일을 보여줍니다 word2",
           "naïve café to the", "word250 word251 the", "x86 word40 display", "the a to and of",
           "word1", "word0 word1 word2 word3 word4 word5 the"]


def fast(store: Store, query: str, k: int, glob: str | None,
         share: float) -> list[tuple[int, float]] | None:
    state = vector_cache.state_of(store)
    return keyword_topk.topk(store.conn, (str(store.path), state), query_terms(query), k,
                             (1.0, CJK_WEIGHT), glob, share=share)


def check(store: Store) -> int:
    """Compare every query, k and filter against today's query; how many took the fast path."""
    taken = 0
    for query in QUERIES:
        for k in (1, 5, 50):
            for glob in (None, "/docs/a/*"):
                for share in (0.02, 0.3):
                    today = store.keyword_matches(fts_query(query), k, glob)
                    got = fast(store, query, k, glob, share)
                    if got is None:
                        continue
                    taken += 1
                    assert [i for i, _ in got] == [i for i, _ in today], (query, k, glob)
                    for (_, a), (_, b) in zip(got, today, strict=True):
                        assert abs(a - b) <= 1e-9 * max(1.0, abs(b)), (query, k, glob, a, b)
    return taken


@pytest.fixture()
def store(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Store:
    monkeypatch.setattr(search_mod, "KEYWORD_TOPK_FROM", 100)  # search takes the fast path
    monkeypatch.setattr(keyword_cache, "_missed", lambda db: None)  # no INDEX.keywords here
    vector_cache.forget()
    keyword_topk._counts.clear()
    s = Store.open(tmp_path / "i.db")
    add(s, np.random.default_rng(5), 800, 0)  # 4,000 chunks
    return s


def test_same_top_k_as_fts5_bm25(store: Store) -> None:
    taken = check(store)
    assert taken >= 40  # the fast path answered most of them (not only the fallback)


def test_search_keyword_hits_unchanged(store: Store, monkeypatch: pytest.MonkeyPatch) -> None:
    answered = answers(monkeypatch, keyword_topk, "topk")
    monkeypatch.setattr(keyword_postings, "topk", lambda *a, **k: None)  # nothing held
    for query in QUERIES:
        for glob in (None, "/docs/b/*"):
            today = [(i, -s) for i, s in store.keyword_matches(fts_query(query), 50, glob)]
            got = keyword_hits(store, query, 50, glob)
            assert [i for i, _ in got] == [i for i, _ in today]
            assert [s for _, s in got] == pytest.approx([s for _, s in today], abs=1e-9)
    assert sum(answered) >= 10  # search went through the fast path


def test_index_changed_between_searches(store: Store) -> None:
    check(store)  # fills the document-count cache
    add(store, np.random.default_rng(6), 200, 800)
    with store.transaction():
        store.delete_documents([f"/docs/a/{d:05d}.md" for d in range(0, 400, 2)])
    assert check(store) >= 40
    gone = {int(r[0]) for r in store.conn.execute("SELECT id FROM chunks")}
    for query in QUERIES:
        assert all(i in gone for i, _ in keyword_hits(store, query, 50))


def test_rows_of_common_phrases_alone_count(store: Store) -> None:
    """A query whose rare phrase matches fewer rows than k: today's query answers."""
    assert fast(store, "zzzunknown the", 5, None, 0.02) is None
    today = store.keyword_matches(fts_query("zzzunknown the"), 5)
    assert keyword_hits(store, "zzzunknown the", 5) == [(i, -s) for i, s in today]
    assert len(today) == 5
