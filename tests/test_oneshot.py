"""One-shot start-up (issue 21): what a single short query costs beyond its search.  Import
sets are checked in test_lazy_import.py; the INDEX.bits check in test_fast_search.py."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest

from gguf_embed import _context, _llama
from gguf_embed._llama_binding import lc
from gguf_embed.engine import Engine


def test_a_small_decode_runs_on_one_thread_and_a_large_one_on_the_engines(
        qwen_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A query's decode is too small to share out: llama.cpp's threads spin at a barrier
    after every op, and on a busy host a second thread made a one-shot query 1.5-2x slower.
    The vectors are the same either way."""
    seen: list[int | None] = []
    decode = _context.Context.decode

    def spy(self: _context.Context, seqs: list[np.ndarray],
            threads: int | None = None) -> np.ndarray:
        seen.append(threads)
        return decode(self, seqs, threads)

    monkeypatch.setattr(_context.Context, "decode", spy)
    with Engine(qwen_path, n_threads=2) as engine:
        params = int(lc.llama_model_n_params(engine._model))
        monkeypatch.setattr(_llama, "WORK_PER_THREAD", params * 64)  # 64 tokens a thread
        query = engine.encode(["how do otters sleep?"], query=True)
        document = engine.encode(["otters hold hands while they sleep " * 20])
        assert seen == [1, 2]
        assert max(query.token_counts) <= 64 < max(document.token_counts)
        both = engine.embed_prepared(engine.prepare(["how do otters sleep?"], query=True),
                                     threads=2)
    assert seen[-1] == 2
    assert float(query.vectors[0] @ both.vectors[0]) > 0.99999


def test_a_cli_vector_search_scans_once_with_numpy_and_many_with_faiss(
        tmp_path: Path, qwen_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """One query: the sign bits are scanned with numpy, faiss is not imported (~70 ms for
    one scan of ~10 ms).  Queries from stdin: faiss's import runs in a thread beside the
    model's load and the query's embedding, for an index whose INDEX.bits is large enough
    to be scanned with it; the thread is over when the command is.  Same results."""
    import threading

    from click.testing import CliRunner

    from gguf_embed import search as search_module
    from gguf_embed import vector_cache
    from gguf_embed.cli import cli
    from gguf_embed.index import Index

    docs = tmp_path / "docs"
    docs.mkdir()
    for i in range(6):
        (docs / f"{i}.md").write_text(f"# Note {i}\n\nOtters hold hands while they sleep ({i}).\n")
    db = tmp_path / "i.db"
    with Engine(qwen_path) as engine, Index(db, engine) as index:
        index.add([docs])
    monkeypatch.setattr(search_module, "EXACT_BELOW", 1)  # the sign-bit path, INDEX.bits
    monkeypatch.setattr(vector_cache, "FAISS_FROM", 0)  # scanned with faiss
    threads: list[str] = []
    knn = vector_cache._faiss_knn

    def spy() -> object:
        threads.append(threading.current_thread().name)
        return knn()

    monkeypatch.setattr(vector_cache, "_faiss_knn", spy)
    args = ["search", "otters", "--db", str(db), "--mode", "vector", "-m", str(qwen_path)]
    imported = sys.modules.pop("faiss", None)  # as in a fresh process (an earlier test's)
    try:
        first = CliRunner().invoke(cli, args)
        assert first.exit_code == 0, first.output
        assert vector_cache.cache_path(db).exists()
        assert threads == [] and "faiss" not in sys.modules  # numpy's scan, no import
        assert vector_cache._import_faiss  # undone after the command
    finally:
        if imported is not None:
            sys.modules["faiss"] = imported
    vector_cache.forget()
    second = CliRunner().invoke(cli, args)  # (faiss, if imported already, is used: no cost)
    assert second.exit_code == 0, second.output
    assert second.stdout == first.stdout and "docs/" in second.stdout
    assert "gguf-embed search meanwhile" not in threads
    threads.clear()
    vector_cache.forget()
    many = CliRunner().invoke(cli, [*args[:1], "-", *args[2:], "--json"],
                              input="otters\notters\n")
    assert many.exit_code == 0, many.output
    assert "gguf-embed search meanwhile" in threads
    assert not [t for t in threading.enumerate() if t.name == "gguf-embed search meanwhile"]
    found = [json.loads(line) for line in many.stdout.splitlines()]
    single = CliRunner().invoke(cli, [*args, "--json"])
    alone = json.loads(single.stdout)  # (a query embedded in a batch of two moves a little)
    for rows in found:
        assert [r["path"] for r in rows] == [r["path"] for r in alone]
        assert [r["score"] for r in rows] == pytest.approx([r["score"] for r in alone],
                                                           abs=1e-3)


def test_a_cli_hybrid_search_ranks_its_keyword_half_while_the_model_loads(
        tmp_path: Path, qwen_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The keyword half of a one-shot hybrid search is ranked in the thread that runs beside
    the model's load and the query's embedding; the search finds it ready (the same answer
    for the same index state) instead of ranking it again, and prints what it printed
    without the thread."""
    import threading

    from click.testing import CliRunner

    from gguf_embed import search as search_module
    from gguf_embed.cli import _search as cli_search
    from gguf_embed.cli import cli
    from gguf_embed.index import Index

    docs = tmp_path / "docs"
    docs.mkdir()
    for i in range(8):
        (docs / f"{i}.md").write_text(f"# Note {i}\n\nOtters hold hands while they sleep "
                                      f"({'otters ' * i}).\n")
    db = tmp_path / "i.db"
    with Engine(qwen_path) as engine, Index(db, engine) as index:
        index.add([docs])
    monkeypatch.setattr(search_module, "KEYWORD_TOPK_FROM", 1)  # the fast, state-keyed path
    ranked_in: list[str] = []
    rank = search_module.keyword_postings.topk

    def spy(*args: object, **kwargs: object) -> object:
        ranked_in.append(threading.current_thread().name)
        return rank(*args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(search_module.keyword_postings, "topk", spy)
    load = cli_search.load_engine

    def slow_load(*args: object, **kwargs: object) -> object:
        """A model that takes longer to load than the keyword half takes to rank."""
        for thread in threading.enumerate():
            if thread.name == "gguf-embed search meanwhile":
                thread.join()
        return load(*args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(cli_search, "load_engine", slow_load)
    args = ["search", "otters", "--db", str(db), "-m", str(qwen_path), "--json"]
    search_module._recent.clear()
    with_thread = CliRunner().invoke(cli, args)
    assert with_thread.exit_code == 0, with_thread.output
    assert ranked_in == ["gguf-embed search meanwhile"]  # once, beside the model's load

    ranked_in.clear()
    search_module._recent.clear()
    search_module.keyword_postings.forget()  # what the first run read and held
    monkeypatch.setattr(cli_search, "_ready_meanwhile", lambda *args: None)
    without = CliRunner().invoke(cli, args)
    assert without.exit_code == 0, without.output
    assert ranked_in == ["MainThread"]
    assert with_thread.stdout == without.stdout and "docs/" in without.stdout


def test_a_keyword_answer_kept_for_an_index_state_is_never_given_for_another(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from gguf_embed import search as search_module
    from gguf_embed.index import Index
    from gguf_embed.testing import FakeEngine

    docs = tmp_path / "docs"
    docs.mkdir()
    for i in range(5):
        (docs / f"{i}.md").write_text(f"Notes {i} on beavers and their dams.\n")
    db = tmp_path / "i.db"
    monkeypatch.setattr(search_module, "KEYWORD_TOPK_FROM", 1)
    with Index(db, FakeEngine()) as index:
        index.add([docs])
        first = search_module.keyword_hits(index.store, "otters", 10)
        assert first == [] and search_module.keyword_hits(index.store, "otters", 10) == []
        (docs / "new.md").write_text("Otters, otters and more otters.\n")
        index.add([docs])
        found = search_module.keyword_hits(index.store, "otters", 10)
        rows = index.store.chunk_rows([chunk_id for chunk_id, _ in found])
        assert [rows[chunk_id].path for chunk_id, _ in found] == [str(docs / "new.md")]


def test_a_search_asks_the_kernel_to_read_its_sign_bits_ahead(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A process that loads INDEX.bits to search scans every byte of it next: the kernel is
    asked to read the whole file ahead (one-shot search at 10^6 x 1024 with the file not
    cached: ~600 -> ~240 ms); code that only looks at the file (is it current?) is not."""
    import os

    from gguf_embed import search as search_module
    from gguf_embed import vector_cache
    from gguf_embed.search import vector_hits

    from .test_fast_search import ids, make, queries, truth

    monkeypatch.setattr(search_module, "EXACT_BELOW", 50)
    vector_cache.forget()
    store, vectors = make(tmp_path, n=600)
    q = queries(vectors, count=1)[0]
    with store.conn:
        vector_hits(store, q, 10)  # writes INDEX.bits
    vector_cache.forget()
    path = vector_cache.cache_path(store.path)
    advised: list[tuple[int, int, int, int]] = []
    real = os.posix_fadvise

    def spy(fd: int, offset: int, length: int, advice: int) -> None:
        advised.append((os.fstat(fd).st_ino, offset, length, advice))
        real(fd, offset, length, advice)

    monkeypatch.setattr(os, "posix_fadvise", spy)
    assert vector_cache.load(path, store.dims or 0) is not None
    assert advised == []
    with store.conn:
        hits = vector_hits(store, q, 10)
    assert ids(hits) == truth(store, q, 10)
    ahead = [a for a in advised if a[0] == path.stat().st_ino]
    assert len(ahead) == 1
    _, offset, length, advice = ahead[0]
    assert advice == os.POSIX_FADV_WILLNEED
    assert offset + length == path.stat().st_size and 0 < offset <= 4096
    store.close()
