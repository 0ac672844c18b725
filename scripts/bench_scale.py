#!/usr/bin/env python3
"""Where one file stops (issue 13): the single SQLite writer's ceiling, search latency and
file size at large chunk counts, and merging shards (the step beyond one writer).

No model runs: vectors are synthetic unit vectors (clustered, as in bench_search), chunk text
is the tldr pages cut into pieces of about ``--chunk-tokens`` tokens (4 characters a token).

* writer: chunks/s through the real write path (``Store.write_document`` inside
  ``Store.transaction``, FTS rows, float vectors and sign bits, the indexer's WAL and
  ``synchronous=NORMAL``), at the indexer's batch size and at 1,024 chunks a transaction,
  side by side with raw APSW + sqlite-vec (one ``vec0`` float table, no text, no FTS);
* merge: chunks/s of ``Index.merge_from`` copying that index into an empty one;
* search: p50/p95 ms of ``Index.search`` (vector, keyword, hybrid; k=10, one row per file)
  over an index of N chunks, and its size on disk.

    python -m scripts.bench_scale                          # 20k chunks, 1024 and 2560 dims
    python -m scripts.bench_scale --chunks 100000 --search-sizes 100000 1000000 \\
        --dir /big/disk                                    # the 1M table (~7 GB on disk)
"""

from __future__ import annotations

import argparse
import contextlib
import os
import re
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import apsw
import numpy as np
import sqlite_vec

from gguf_embed import Index, vector_cache
from gguf_embed import search as search_module
from gguf_embed import store_keyword_cache as keyword_cache
from gguf_embed import store_keyword_postings as keyword_postings
from gguf_embed import store_keyword_topk as keyword_topk
from gguf_embed._vectors import vec_blob
from gguf_embed.indexer import BATCH_CHUNKS, BATCH_TOKENS
from gguf_embed.testing import FakeEngine

ROOT = Path(__file__).resolve().parent.parent
PAGES = ROOT / "tests" / "data" / "tldr-linux" / "pages"
CHARS_PER_TOKEN = 4
CHUNKS_PER_DOC = 4
TOPICS = 1000
MODES = [("vector", "vector", "file"), ("keyword", "keyword", "file"),
         ("hybrid", "hybrid", "file"), ("vector, one row per chunk", "vector", "chunk")]


def chunk_texts(tokens: int, pages: Path = PAGES) -> list[str]:
    """The tldr pages, concatenated and cut at line ends into ~``tokens``-token pieces."""
    size = tokens * CHARS_PER_TOKEN
    out: list[str] = []
    current: list[str] = []
    length = 0
    for page in sorted(pages.glob("*.md")):
        for line in page.read_text(encoding="utf-8").splitlines():
            current.append(line)
            length += len(line) + 1
            if length >= size:
                out.append("\n".join(current))
                current, length = [], 0
    return out


def queries(pages: Path = PAGES, count: int = 30) -> list[str]:
    """Keyword-style questions: the one-line descriptions of tldr pages."""
    found = []
    for page in sorted(pages.glob("*.md"))[::37]:
        match = re.search(r"^> (.+?)\.?$", page.read_text(encoding="utf-8"), re.M)
        if match and "More information" not in match[1]:
            found.append(match[1])
    return found[:count]


class Vectors:
    """Clustered synthetic unit vectors, made a block at a time (1M x 2560 would not fit)."""

    def __init__(self, dims: int, seed: int = 7) -> None:
        self.dims = dims
        self.rng = np.random.default_rng(seed)
        self.topics = self.rng.standard_normal((TOPICS, dims)).astype(np.float32)

    def block(self, n: int) -> np.ndarray:
        data = self.topics[self.rng.integers(0, TOPICS, n)]
        data = data + 0.9 * self.rng.standard_normal((n, self.dims), dtype=np.float32)
        return data / np.linalg.norm(data, axis=1, keepdims=True)


class QueryEngine(FakeEngine):
    """FakeEngine whose query vectors are the ones queued (perturbed stored vectors)."""

    def __init__(self, dims: int) -> None:
        super().__init__(dims=dims, max_tokens=8192, name="bench")
        self.queued: list[np.ndarray] = []

    def encode(self, texts: Sequence[str], **options: Any) -> Any:
        out = super().encode(texts, **options)
        if options.get("query") and self.queued:
            out.vectors[:] = np.stack([self.queued.pop(0) for _ in texts])
        return out


def documents(texts: list[str], vectors: Vectors, n: int,
              block: int = 4096) -> Iterator[tuple[str, list[Any], list[bytes]]]:
    """(path, chunks, vector blobs) for ``n`` chunks, ``CHUNKS_PER_DOC`` to a document."""
    made = 0
    while made < n:
        part = vectors.block(min(block, n - made))
        blobs = [vec_blob(v) for v in part]
        for d in range(0, len(part), CHUNKS_PER_DOC):
            chunks = [SimpleNamespace(
                text=texts[(made + d + i) % len(texts)], start_line=1 + 40 * i,
                end_line=40 + 40 * i, start_page=None, end_page=None,
                n_tokens=len(texts[(made + d + i) % len(texts)]) // CHARS_PER_TOKEN,
                hash=f"{made + d + i:016x}") for i in range(len(blobs[d:d + CHUNKS_PER_DOC]))]
            yield f"/corpus/doc-{made + d:08d}.md", chunks, blobs[d:d + CHUNKS_PER_DOC]
        made += len(part)


def write_index(db: Path, texts: list[str], dims: int, n: int, batch: int,
                seed: int = 7) -> float:
    """Write ``n`` chunks through the real write path, ``batch`` chunks a transaction;
    returns the seconds spent writing (vector making excluded)."""
    vectors = Vectors(dims, seed)
    with Index(db, FakeEngine(dims=dims, max_tokens=8192, name="bench")) as index:
        store = index.store
        spent = 0.0
        pending: list[tuple[str, list[Any], list[bytes]]] = []
        held = 0
        for doc in documents(texts, vectors, n):
            pending.append(doc)
            held += len(doc[1])
            if held >= batch:
                spent += _flush(store, pending)
                pending, held = [], 0
        if pending:
            spent += _flush(store, pending)
    return spent


def _flush(store: Any, pending: list[tuple[str, list[Any], list[bytes]]]) -> float:
    start = time.perf_counter()
    with store.transaction():
        for path, chunks, blobs in pending:
            store.write_document(path=path, hash=path, size=1000, mtime=1.0, kind="markdown",
                                 chunks=chunks, vectors=blobs)
    return time.perf_counter() - start


def write_raw(db: Path, dims: int, n: int, batch: int, vec0: bool) -> float:
    """The peers: APSW alone, one table of (rowid, vector blob) -- a plain table, or a
    sqlite-vec vec0 float table -- same pragmas, no text, no FTS, ``executemany``."""
    vectors = Vectors(dims)
    conn = apsw.Connection(str(db))
    conn.enable_load_extension(True)
    conn.load_extension(sqlite_vec.loadable_path())
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=NORMAL")
    conn.execute(f"CREATE VIRTUAL TABLE v USING vec0(embedding float[{dims}])" if vec0 else
                 "CREATE TABLE v (rowid INTEGER PRIMARY KEY, embedding BLOB NOT NULL)")
    spent, made = 0.0, 0
    while made < n:
        rows = [(made + i + 1, vec_blob(v)) for i, v in enumerate(vectors.block(min(batch,
                                                                               n - made)))]
        start = time.perf_counter()
        with conn:
            conn.executemany("INSERT INTO v(rowid, embedding) VALUES (?, ?)", rows)
        spent += time.perf_counter() - start
        made += len(rows)
    conn.close()
    return spent


def size_of(db: Path) -> int:
    return sum(os.path.getsize(str(db) + s) for s in ("", "-wal") if os.path.exists(str(db) + s))


def remove(db: Path) -> None:
    for suffix in ("", "-wal", "-shm", ".lock"):
        Path(str(db) + suffix).unlink(missing_ok=True)


def writer_table(work: Path, texts: list[str], n: int, dims_list: list[int],
                 tokens: int) -> dict[int, float]:
    """Prints the writer and merge table; returns bytes per chunk at each dims."""
    indexer_batch = max(1, min(BATCH_CHUNKS, -(-BATCH_TOKENS // tokens)))
    per_chunk: dict[int, float] = {}
    print(f"### Writer ceiling: {n:,} chunks of ~{tokens} tokens "
          f"({sum(map(len, texts)) // len(texts):,} characters), {CHUNKS_PER_DOC} per "
          f"document\n")
    print("| dims | writer | chunks per transaction | chunks/s | MB on disk |")
    print("| ---: | --- | ---: | ---: | ---: |")
    for dims in dims_list:
        runs = [("gguf-embed Store.write_document (the indexer's batch)", indexer_batch),
                ("gguf-embed Store.write_document", 1024)]
        for label, batch in runs:
            db = work / f"writer-{dims}-{batch}.db"
            seconds = write_index(db, texts, dims, n, batch)
            print(f"| {dims} | {label} | {batch:,} | {n / seconds:,.0f} | "
                  f"{size_of(db) / 1e6:,.0f} |", flush=True)
            per_chunk[dims] = size_of(db) / n
            if batch != 1024:
                remove(db)
        out = work / f"merged-{dims}.db"
        start = time.perf_counter()
        with Index(out) as index:
            summary = index.merge_from([work / f"writer-{dims}-1024.db"])
        seconds = time.perf_counter() - start
        assert summary.chunks == n, summary
        print(f"| {dims} | gguf-embed merge (`Index.merge_from`, one shard) | {n:,} | "
              f"{n / seconds:,.0f} | {size_of(out) / 1e6:,.0f} |", flush=True)
        remove(out)
        remove(work / f"writer-{dims}-1024.db")
        for vec0, label in ((False, "plain BLOB table"), (True, "sqlite-vec vec0 float table")):
            db = work / f"raw-{dims}-{vec0}.db"
            seconds = write_raw(db, dims, n, 1024, vec0)
            print(f"| {dims} | peer: APSW, {label} (vectors only: no text, no FTS) | 1,024 "
                  f"| {n / seconds:,.0f} | {size_of(db) / 1e6:,.0f} |", flush=True)
            remove(db)
    return per_chunk


def search_table(work: Path, texts: list[str], sizes: list[int], dims: int, count: int,
                 tokens: int, keep: Path | None = None, today: int = 0,
                 keyword_warm: bool = False, reverse: bool = False) -> None:
    words = queries(count=count)
    print(f"\n### Search through `Index.search`: {dims} dims, ~{tokens}-token chunks, "
          f"{len(words)} queries, k=10, one result per file unless said; each case's query "
          f"vectors searched once untimed before it is timed (their pages cached)\n")
    print("| chunks | build s (chunks/s) | MB on disk | bytes/chunk | path | mode | p50 ms "
          "| p95 ms | source chunk in top 10 | RSS MB |")
    print("| ---: | ---: | ---: | ---: | --- | --- | ---: | ---: | ---: | ---: |")
    for n in sizes:
        db = (keep or work) / f"search-{n}-{dims}.db"
        seconds = float("nan")
        if not db.exists():
            seconds = write_index(db, texts, dims, n, batch=4096, seed=11)
            with Index(db, QueryEngine(dims)) as index:  # checkpoint the WAL into the file
                index.store.conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        size = size_of(db)
        rng = np.random.default_rng(3)
        again = Vectors(dims, seed=11)  # the stored vectors, to perturb into queries
        first = again.block(min(n, 4096))
        chosen = rng.integers(0, len(first), len(words))
        picks = first[chosen]
        sources = [(int(i) + 1, f"/corpus/doc-{int(i) // CHUNKS_PER_DOC * CHUNKS_PER_DOC:08d}.md")
                   for i in chosen]  # the chunk id and document each query was made from
        engine = QueryEngine(dims)
        for path in (["today (no cache)"] if today else []) + ["gguf-embed"]:
            old = path != "gguf-embed"
            vector_cache.forget()
            with Index(db, engine, readonly=True) as index, _today(old):
                start = time.perf_counter()
                engine.queued = [picks[0]]
                index.search(words[0], mode="vector")  # builds or loads the cache
                if not old:
                    print(f"<!-- {n:,} x {dims}: first vector search (cache made or loaded) "
                          f"{time.perf_counter() - start:.1f} s -->", flush=True)
                if keyword_warm and not old:  # a long-running process that has seen them
                    start = time.perf_counter()
                    for query in words * 2:
                        index.search(query, mode="keyword")
                    keyword_postings.wait()
                    print(f"<!-- {n:,} x {dims}: each query searched twice before, postings "
                          f"read in {time.perf_counter() - start:.1f} s -->", flush=True)
                for label, mode, group in MODES[::-1] if reverse else MODES:
                    use = words[:today] if old else words
                    noisy = [p + 0.05 * rng.standard_normal(dims).astype(np.float32)
                             for p in [picks[0], *picks[:len(use)]]]
                    if mode == "keyword" or old:
                        engine.queued = noisy
                        index.search(words[0], mode=mode, group=group)  # warm the page cache
                    else:  # each case's own queries, once, untimed: see warm_up
                        warm_up(index, engine, use, noisy[1:])
                        engine.queued = noisy[1:]
                    keyword_postings.wait()  # the last case's background reads: not in this one
                    times, found = [], 0
                    for query, (chunk_id, doc) in zip(use, sources, strict=False):
                        search_module.forget_recent()  # timed: the ranking, not a kept answer
                        start = time.perf_counter()
                        hits = index.search(query, k=10, mode=mode, group=group)
                        times.append(time.perf_counter() - start)
                        found += any(h.chunk_id == chunk_id and h.path == doc for h in hits)
                    ms = np.array(times) * 1000
                    print(f"| {n:,} | {seconds:,.0f} | {size / 1e6:,.0f} | "
                          f"{size / n:,.0f} | {path} | {label} | {np.percentile(ms, 50):.1f} | "
                          f"{np.percentile(ms, 95):.1f} | "
                          f"{f'{found}/{len(use)}' if mode != 'keyword' else ''} | "
                          f"{_rss_mb():,.0f} |", flush=True)
        if keep is None:
            remove(db)


def warm_up(index: Index, engine: QueryEngine, words: list[str],
            vectors: list[np.ndarray]) -> None:
    """Search these query vectors once, untimed (vector mode, one row per file: the same
    1,000 candidates as any mode's vector half, and the 50 chunks grouping reads), so that
    every case is timed with its candidates' pages in the OS's page cache, whatever the order
    of the cases.  Without it the first case timed paid for reading them: each case draws
    its own query vectors, but they fall in the same clusters, so a later case found most of
    its pages read by the earlier ones (this VM also reclaims pages idle for a few seconds):
    vector one row per file, timed first, 22.8 ms p50 against 13.7 ms one row per chunk,
    timed last, where the same code measured alike in alternating order (BENCHMARKS.md).
    The keyword half is left alone: its caches have their own options (``--keyword-warm``,
    ``--first-sight``); the postings a case's searches read in the background are waited for
    before the next case is timed (they took a core from the case timed after hybrid).
    ``--reverse`` times the cases in the other order, to check."""
    engine.queued = list(vectors)
    for query in words:
        index.search(query, k=10, mode="vector", group="file")


def first_sight_table(work: Path, sizes: list[int], dims: int, count: int,
                      keep: Path | None) -> None:
    """Keyword and hybrid search of words this process has never searched for: every
    in-process keyword cache (held postings, document counts, the loaded INDEX.keywords)
    dropped before each query, as in a fresh server or a one-shot CLI search (the OS's page
    cache stays warm); with and without INDEX.keywords, in one run."""
    words = queries(count=count)
    print(f"\n### First sight: keyword and hybrid search of words never searched before, "
          f"{dims} dims, {len(words)} queries, k=10, one result per file\n")
    print("| chunks | INDEX.keywords | mode | p50 ms | p95 ms | max ms | RSS MB |")
    print("| ---: | --- | --- | ---: | ---: | ---: | ---: |")
    for n in sizes:
        db = (keep or work) / f"search-{n}-{dims}.db"
        if not db.exists():
            continue
        engine = QueryEngine(dims)
        rng = np.random.default_rng(3)
        vector_cache.forget()
        with Index(db, engine, readonly=True) as index:
            engine.queued = [rng.standard_normal(dims).astype(np.float32)]
            index.search(words[0], mode="vector")  # the sign bits, loaded once
            # the same query vectors in every mode: the vector half's rows are in the OS's
            # page cache after the first (as in search_table), so hybrid's cost beyond it is
            # the keyword half's
            vectors = [rng.standard_normal(dims).astype(np.float32) for _ in words]
            times = []
            for query, vector in zip(words, vectors, strict=True):  # hybrid's other half
                engine.queued = [vector]
                start = time.perf_counter()
                index.search(query, k=10, mode="vector")
                times.append(time.perf_counter() - start)
            ms = np.array(times) * 1000
            print(f"| {n:,} | - | vector (first time) | {np.percentile(ms, 50):.1f} | "
                  f"{np.percentile(ms, 95):.1f} | {ms.max():.1f} | {_rss_mb():,.0f} |")
            for label in ("no", "yes"):
                saved = keyword_cache.topk
                if label == "no":
                    keyword_cache.topk = lambda *a, **kw: None  # type: ignore[assignment]
                try:
                    for mode in ("keyword", "hybrid"):
                        times = []
                        for query, vector in zip(words, vectors, strict=True):
                            keyword_postings.forget()
                            keyword_cache.forget()
                            keyword_topk._counts.clear()
                            search_module.forget_recent()
                            engine.queued = [vector]
                            start = time.perf_counter()
                            index.search(query, k=10, mode=mode)
                            times.append(time.perf_counter() - start)
                        ms = np.array(times) * 1000
                        print(f"| {n:,} | {label} | {mode} | {np.percentile(ms, 50):.1f} | "
                              f"{np.percentile(ms, 95):.1f} | {ms.max():.1f} | "
                              f"{_rss_mb():,.0f} |", flush=True)
                finally:
                    keyword_cache.topk = saved  # type: ignore[assignment]
                    keyword_postings.wait()


def _rss_mb() -> float:
    with open("/proc/self/status", encoding="ascii") as f:
        return next(int(line.split()[1]) / 1024 for line in f if line.startswith("VmRSS:"))


@contextlib.contextmanager
def _today(on: bool) -> Iterator[None]:
    """Search as before the cache: sqlite-vec's own Hamming KNN over its bit table."""
    if not on:
        yield
        return
    saved = vector_cache.current
    vector_cache.current = lambda store: None  # type: ignore[assignment]
    try:
        yield
    finally:
        vector_cache.current = saved


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--chunks", type=int, default=20_000,
                        help="chunks written per writer run (default 20,000)")
    parser.add_argument("--dims", type=int, nargs="+", default=[1024, 2560])
    parser.add_argument("--chunk-tokens", type=int, default=300)
    parser.add_argument("--search-sizes", type=int, nargs="*", default=[20_000],
                        help="index sizes for the search table (e.g. 100000 1000000)")
    parser.add_argument("--search-dims", type=int, default=1024)
    parser.add_argument("--queries", type=int, default=30)
    parser.add_argument("--dir", type=Path, default=None,
                        help="where the index files go (default: a temporary folder)")
    parser.add_argument("--skip-writer", action="store_true")
    parser.add_argument("--keep", type=Path, default=None,
                        help="keep the search indexes in this folder (search-N-DIMS.db) and "
                             "reuse them on the next run")
    parser.add_argument("--today", type=int, default=0,
                        help="also run this many queries the way search worked before the "
                             "cache (sqlite-vec's KNN)")
    parser.add_argument("--keyword-warm", action="store_true",
                        help="search each query twice in keyword mode before timing (the "
                             "phrases' BM25 postings held, as in a long-running server)")
    parser.add_argument("--reverse", action="store_true",
                        help="time the search cases in reverse order (vector one row per "
                             "chunk first): a check that the order does not bias them")
    parser.add_argument("--first-sight", action="store_true",
                        help="only the first-sight keyword/hybrid table (with and without "
                             "INDEX.keywords) over the --keep indexes of --search-sizes")
    opts = parser.parse_args()
    if opts.first_sight:
        first_sight_table(opts.keep or Path("."), opts.search_sizes, opts.search_dims,
                          opts.queries, opts.keep)
        return
    texts = chunk_texts(opts.chunk_tokens)
    load = os.getloadavg()[0]
    print(f"{os.cpu_count()} logical CPUs, load average {load:.1f} at the start; "
          f"SQLite {apsw.sqlite_lib_version()}, sqlite-vec {sqlite_vec.__version__}, "
          f"WAL + synchronous=NORMAL (the indexer's settings)\n")
    with tempfile.TemporaryDirectory(dir=opts.dir) as tmp:
        work = Path(tmp)
        if not opts.skip_writer:
            per_chunk = writer_table(work, texts, opts.chunks, opts.dims, opts.chunk_tokens)
            print("\nsize at 1M chunks, extrapolated from the bytes per chunk above: " + ", ".join(
                f"{dims} dims {per_chunk[dims] * 1e6 / 1e9:,.1f} GB" for dims in per_chunk))
        if opts.search_sizes:
            search_table(work, texts, opts.search_sizes, opts.search_dims, opts.queries,
                         opts.chunk_tokens, opts.keep, opts.today, opts.keyword_warm,
                         opts.reverse)
    print(f"\nload average {os.getloadavg()[0]:.1f} at the end", file=sys.stderr)


if __name__ == "__main__":
    main()
