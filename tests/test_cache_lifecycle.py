"""The search caches beside an index (``INDEX.keywords``, ``INDEX.bits``) through every writer
(issue 21): a ``merge`` leaves them current as an ``index`` run does, a cache that fails to
build never fails the writer, and the CLI says on stderr when a build starts (at a million
chunks it takes ~35 s: silence looks like a hang), never under the threshold or when the
file is already current."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from click.testing import CliRunner

from gguf_embed import Index, vector_cache
from gguf_embed import search as search_mod
from gguf_embed import store_keyword_cache as kcache
from gguf_embed import store_keyword_postings as postings
from gguf_embed import store_keyword_stats as kstats
from gguf_embed import store_keyword_topk as keyword_topk
from gguf_embed.cli import _index as cli_index
from gguf_embed.cli import cli
from gguf_embed.indexer_records import Stage
from gguf_embed.keywords import fts_query
from gguf_embed.search import keyword_hits
from gguf_embed.store import Store
from gguf_embed.store_cache import State, chunk_log
from gguf_embed.testing import FakeEngine
from gguf_embed.watch import WatchEvent

from .support.spy import answers
from .test_keyword_topk import text

QUERIES = ["display the file", "the a", "word3 the", "file for 文件", "to and of word1"]
LINE = "search cache for"


def forget() -> None:
    vector_cache.forget()
    keyword_topk._counts.clear()
    postings.forget()
    kcache.forget()


@pytest.fixture()
def small(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Thresholds down: an index of a few dozen chunks counts as large."""
    monkeypatch.setattr(search_mod, "KEYWORD_TOPK_FROM", 10)
    monkeypatch.setattr(search_mod, "EXACT_BELOW", 10)
    monkeypatch.setattr(kcache, "MIN_ROWS", 5)
    monkeypatch.setattr(kcache, "_missed", lambda db: None)  # no background updates here
    forget()
    yield
    forget()


def folder(root: Path, name: str, files: int, seed: int) -> Path:
    rng = np.random.default_rng(seed)
    out = root / name
    out.mkdir()
    for i in range(files):
        (out / f"{i}.md").write_text(text(rng) + "\n", encoding="utf-8")
    return out


def shard(db: Path, docs: Path) -> Path:
    with Index(db, FakeEngine()) as index:
        assert not index.add([docs]).failed
    return db


def current(db: Path) -> tuple[bool, bool]:
    """Whether INDEX.keywords and INDEX.bits beside ``db`` are of its state now."""
    store = Store.open(db, create=False, readonly=True)
    try:
        with store.conn:
            log = chunk_log(store.conn)
        dims = store.dims
    finally:
        store.close()
    assert log is not None and dims
    words = kstats.load(kstats.cache_path(db))
    bits = vector_cache.load(vector_cache.cache_path(db), dims)
    state = State(*log)
    return (words is not None and words.state == state,
            bits is not None and bits.state == state)


def same_as_fts5(db: Path, monkeypatch: pytest.MonkeyPatch) -> list[bool]:
    """Keyword search of every query, as a fresh process: FTS5's rows, order and scores;
    whether INDEX.keywords answered each."""
    forget()
    calls = answers(monkeypatch, kcache, "topk")
    with Index(db, readonly=True) as index:
        store = index.store
        for query in QUERIES:
            today = store.keyword_matches(fts_query(query), 10)
            assert keyword_hits(store, query, 10) == [(i, -s) for i, s in today], query
    return calls


def test_a_merge_leaves_the_caches_current(tmp_path: Path, small: None,
                                           monkeypatch: pytest.MonkeyPatch) -> None:
    a = shard(tmp_path / "a.db", folder(tmp_path, "a", 30, 1))
    b = shard(tmp_path / "b.db", folder(tmp_path, "b", 30, 2))
    c = shard(tmp_path / "c.db", folder(tmp_path, "c", 8, 3))
    out = tmp_path / "out.db"
    stages: list[Stage] = []
    with Index(out) as index:
        summary = index.merge_from([a, b], on_stage=stages.append)
    assert summary.chunks >= 60
    assert current(out) == (True, True)
    assert True in same_as_fts5(out, monkeypatch)  # answered from the file
    assert [(s.name, s.how) for s in stages] == [("bits", "build"), ("keywords", "build")]
    assert {s.chunks for s in stages} == {summary.chunks}
    # into an index that has them: brought up to date, not left behind
    stages.clear()
    with Index(out) as index:
        index.merge_from([c], on_stage=stages.append)
    assert [(s.name, s.how) for s in stages] == [("bits", "refresh"), ("keywords", "refresh")]
    assert current(out) == (True, True)
    assert True in same_as_fts5(out, monkeypatch)
    # nothing new (the same shard again: every copy as new): nothing to do, nothing said
    stages.clear()
    with Index(out) as index:
        assert index.merge_from([c], on_stage=stages.append).documents == 0
    assert stages == [] and current(out) == (True, True)


def test_a_small_merge_makes_no_keyword_file(tmp_path: Path) -> None:
    forget()
    a = shard(tmp_path / "a.db", folder(tmp_path, "a", 10, 1))
    out = tmp_path / "out.db"
    stages: list[Stage] = []
    with Index(out) as index:
        index.merge_from([a], on_stage=stages.append)
    assert stages == [] and not kstats.cache_path(out).exists()


@pytest.mark.parametrize("broken", ["keywords", "bits"])
def test_a_cache_that_fails_to_build_does_not_fail_the_merge(
        tmp_path: Path, small: None, monkeypatch: pytest.MonkeyPatch, broken: str) -> None:
    a = shard(tmp_path / "a.db", folder(tmp_path, "a", 30, 1))
    forget()

    def fail(*args: Any, **kwargs: Any) -> Any:
        raise OSError(28, "No space left on device")

    if broken == "keywords":
        monkeypatch.setattr(kcache, "update", fail)
    else:
        monkeypatch.setattr(vector_cache, "current", fail)
    out = tmp_path / "out.db"
    with Index(out) as index:
        summary = index.merge_from([a])
    assert summary.documents == 30
    with Index(out, FakeEngine(), readonly=True) as index:
        assert index.status()["documents"] == 30
    # the other cache is made all the same; searches are FTS5's either way
    assert current(out) == ((False, True) if broken == "keywords" else (True, False))
    assert (True in same_as_fts5(out, monkeypatch)) == (broken == "bits")


def test_watch_leaves_the_keyword_cache_current_after_each_batch(
        tmp_path: Path, small: None, monkeypatch: pytest.MonkeyPatch) -> None:
    """The catch-up, a batch of new files and a batch of deletions alone: after each event
    INDEX.keywords is of the index's state (the sign bits: after the catch-up, an index
    run; batches leave them to the next search)."""
    docs = folder(tmp_path, "docs", 30, 1)
    db = tmp_path / "i.db"
    events: list[WatchEvent] = []
    stop = threading.Event()
    seen: list[tuple[str, int, tuple[bool, bool]]] = []

    def note(event: WatchEvent) -> None:
        events.append(event)
        s = event.summary
        seen.append((event.kind, (s.added + s.removed) if s else -1, current(db)))

    with Index(db, FakeEngine()) as index:
        thread = threading.Thread(target=index.watch, args=([docs], stop, note),
                                  kwargs={"step_ms": 50}, daemon=True)
        thread.start()
        try:
            wait_for(lambda: any(e.kind == "catch-up" for e in events))
            rng = np.random.default_rng(9)
            for i in range(5):
                (docs / f"new{i}.md").write_text(text(rng) + "\n", encoding="utf-8")
            wait_for(lambda: sum(s.added for e in events if e.kind == "batch"
                                 and (s := e.summary)) == 5)
            for i in range(0, 12, 2):
                (docs / f"{i}.md").unlink()
            wait_for(lambda: sum(s.removed for e in events if e.kind == "batch"
                                 and (s := e.summary)) == 6)
        finally:
            stop.set()
            thread.join(timeout=10)
    assert not thread.is_alive()
    assert not [e for e in events if e.kind == "error"]
    assert seen[0] == ("catch-up", 30, (True, True))
    batches = [(n, fresh[0]) for kind, n, fresh in seen if kind == "batch"]
    assert batches and all(fresh for _, fresh in batches), seen
    assert True in same_as_fts5(db, monkeypatch)


def wait_for(condition: Any, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out waiting"
        time.sleep(0.05)


# ---------------------------------------------------------------- what the CLI says


@pytest.fixture()
def fake_model(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(cli_index, "load_engine", lambda *args, **kwargs: FakeEngine())


def test_index_says_on_stderr_when_it_builds_the_keyword_cache(
        tmp_path: Path, fake_model: None, monkeypatch: pytest.MonkeyPatch) -> None:
    docs = folder(tmp_path, "docs", 30, 1)
    db = tmp_path / "i.db"
    forget()
    base = ["index", str(docs), "--db", str(db), "--model", "fake", "--progress"]
    small = CliRunner().invoke(cli, base)  # under the threshold: no file, nothing said
    assert small.exit_code == 0, small.output
    assert LINE not in small.stderr and not kstats.cache_path(db).exists()
    monkeypatch.setattr(search_mod, "KEYWORD_TOPK_FROM", 10)
    monkeypatch.setattr(search_mod, "EXACT_BELOW", 10)
    monkeypatch.setattr(kcache, "MIN_ROWS", 5)
    (docs / "new.md").write_text("the file display\n", encoding="utf-8")
    built = CliRunner().invoke(cli, [*base, "--json"])
    assert built.exit_code == 0, built.output
    lines = [line for line in built.stderr.replace("\r", "\n").splitlines() if LINE in line]
    assert lines == ["building the vector search cache for 31 chunks…",
                     "building the keyword search cache for 31 chunks…"], built.stderr
    assert LINE not in built.stdout  # stdout: the summary alone
    assert kstats.cache_path(db).exists()
    again = CliRunner().invoke(cli, base)  # nothing changed: the file is current
    assert again.exit_code == 0 and LINE not in again.stderr, again.stderr
    kstats.cache_path(db).unlink()  # lost (deleting it is always safe): the next run makes it
    forget()
    caught_up = CliRunner().invoke(cli, base)
    assert caught_up.exit_code == 0, caught_up.output
    lines = [line for line in caught_up.stderr.splitlines() if LINE in line]
    assert lines == ["building the keyword search cache for 31 chunks…"]  # the bits: current
    assert kstats.cache_path(db).exists()
    quiet = CliRunner().invoke(cli, [*base[:-1], "--no-progress"])  # progress not asked for
    assert quiet.exit_code == 0 and quiet.stderr == ""


def test_merge_says_on_stderr_when_it_builds_the_keyword_cache(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    forget()
    a = shard(tmp_path / "a.db", folder(tmp_path, "a", 20, 1))
    b = shard(tmp_path / "b.db", folder(tmp_path, "b", 20, 2))
    under = CliRunner().invoke(cli, ["merge", str(tmp_path / "under.db"), str(a), str(b)])
    assert under.exit_code == 0, under.output
    assert LINE not in under.stderr and LINE not in under.stdout
    monkeypatch.setattr(search_mod, "KEYWORD_TOPK_FROM", 10)
    monkeypatch.setattr(kcache, "MIN_ROWS", 5)
    out = tmp_path / "out.db"
    result = CliRunner().invoke(cli, ["merge", str(out), str(a), str(b), "--json"])
    assert result.exit_code == 0, result.output
    assert result.stderr.splitlines()[-1] == "building the keyword search cache for 40 chunks…"
    assert LINE not in result.stdout
    assert current(out)[0]
