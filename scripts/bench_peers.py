#!/usr/bin/env python3
"""Vector search peers over one prebuilt index (issue 21): p50/p95 ms, recall@10 against an
exact numpy scan, memory of each structure, and its build time, side by side in one run.

  * today's path without the cache: sqlite-vec Hamming KNN over ``vec_bits`` + exact rescoring
  * gguf-embed: sign bits in memory (vector_cache.py: faiss's scan, numpy's without faiss) +
    exact rescoring of the candidates from SQLite's float table -- the chosen path
  * the same coarse pass by usearch (exact Hamming, SimSIMD) and by faiss ``IndexBinaryFlat``,
    both rescored from SQLite the same way
  * exact numpy scan: float32 matrix @ query (the truth for recall)
  * usearch HNSW over the float vectors (``--hnsw``; minutes to build at 10^5, not run at 10^6)

The index is one written by ``scripts.bench_scale`` (``--keep DIR``): chunk ids 1..N, vectors
``Vectors(dims, seed=11)``, remade here block by block rather than read back.

    python -m scripts.bench_peers --db /tmp/scale/search-1000000-1024.db --dims 1024
"""

from __future__ import annotations

import argparse
import os
import resource
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

from gguf_embed import search as search_mod
from gguf_embed import vector_cache
from gguf_embed.search import coarse_candidates, rescore, vector_hits
from gguf_embed.store import Store
from scripts.bench_scale import Vectors

K = 10


def rss_mb() -> float:
    with open("/proc/self/status", encoding="ascii") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return float(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss) / 1024


def stored_vectors(n: int, dims: int) -> np.ndarray:
    vectors = Vectors(dims, seed=11)
    out = np.empty((n, dims), dtype=np.float32)
    for start in range(0, n, 4096):
        out[start:start + 4096] = vectors.block(min(4096, n - start))
    return out


def timed(fn: Callable[[np.ndarray], list[int]], queries: np.ndarray,
          truth: list[set[int]]) -> tuple[float, float, float]:
    for q in queries:  # untimed: the candidates' pages into the OS cache, as in a warm process
        fn(q)  # (a VM that reclaims idle page cache would otherwise charge the first method)
    times, recalls = [], []
    for q, want in zip(queries, truth, strict=True):
        start = time.perf_counter()
        got = fn(q)
        times.append(time.perf_counter() - start)
        recalls.append(len(set(got[:K]) & want) / K)
    ms = np.array(times) * 1000
    return float(np.percentile(ms, 50)), float(np.percentile(ms, 95)), float(np.mean(recalls))


def one_shot(db: Path, query: np.ndarray, today: bool) -> float:
    """Seconds for a fresh interpreter to import, open the index, load the cache file and run
    one ``Index.search(mode="vector")`` (results with snippets; no model: the query vector is
    given)."""
    qfile = db.with_suffix(".query.npy")
    np.save(qfile, query)
    start = time.perf_counter()
    subprocess.run([sys.executable, "-c", ONE_SHOT.format(
        db=str(db), qfile=str(qfile), today=today, warm=0)], check=True)
    return time.perf_counter() - start


ONE_SHOT = """
import numpy as np
from gguf_embed import vector_cache
from gguf_embed.index import Index
from gguf_embed.testing import FakeEngine
q = np.load({qfile!r})
class Given(FakeEngine):
    def encode(self, texts, **options):
        out = super().encode(texts, **options)
        out.vectors[:] = q
        return out
if {today}:
    vector_cache.current = lambda store: None
with Index({db!r}, Given(dims=len(q), max_tokens=8192, name="bench"), readonly=True) as index:
    for _ in range({warm} + 1):
        assert index.search("x", k=10, mode="vector")
if {warm}:
    status = dict(line.split(":", 1) for line in open("/proc/self/status"))
    print(*(int(status[key].split()[0]) // 1024 for key in ("VmRSS", "RssAnon", "RssFile")))
"""


def warm_rss(db: Path, query: np.ndarray) -> list[int]:
    """RSS, anonymous and file-backed MB of a fresh process after 20 warm searches (what
    ``serve`` or ``mcp`` holds for this index)."""
    qfile = db.with_suffix(".query.npy")
    np.save(qfile, query)
    out = subprocess.run([sys.executable, "-c", ONE_SHOT.format(
        db=str(db), qfile=str(qfile), today=False, warm=20)], check=True,
        capture_output=True, text=True).stdout
    return [int(x) for x in out.split()]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--db", type=Path, required=True)
    parser.add_argument("--dims", type=int, default=1024)
    parser.add_argument("--queries", type=int, default=50)
    parser.add_argument("--hnsw", action="store_true")
    parser.add_argument("--no-today", action="store_true",
                        help="skip today's path (sqlite-vec's KNN: ~6 s a query at 10^6)")
    parser.add_argument("--today-queries", type=int, default=None,
                        help="run today's path on only this many of the queries")
    parser.add_argument("--rebuild", action="store_true",
                        help="delete the .bits file first and time making it from SQLite "
                             "(default: load it, as a one-shot search does)")
    parser.add_argument("--truth-from", default=None, metavar="PREFIX",
                        help="queries and their exact top 10 from PREFIX.queries.npy and "
                             "PREFIX.truth.npy (1M x 2560 floats do not fit beside the index "
                             "in memory); the numpy peer is then not run")
    parser.add_argument("--no-exact", action="store_true",
                        help="skip the float matrix (recall then against the sqlite-vec scan)")
    opts = parser.parse_args()
    store = Store.open(opts.db, readonly=True)
    n = store.chunk_count()
    rng = np.random.default_rng(3)
    print(f"{os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f}; {n:,} chunks, "
          f"{opts.dims} dims, {opts.queries} queries, k={K}\n")
    print("| chunks | dims | method | p50 ms | p95 ms | recall@10 | memory MB | build s |")
    print("| ---: | ---: | --- | ---: | ---: | ---: | ---: | ---: |")

    def row(label: str, stats: tuple[float, float, float], mem: float, build: float) -> None:
        print(f"| {n:,} | {opts.dims} | {label} | {stats[0]:.1f} | {stats[1]:.1f} | "
              f"{stats[2]:.3f} | {mem:,.0f} | {build:.1f} |", flush=True)

    if opts.rebuild:
        vector_cache.cache_path(opts.db).unlink(missing_ok=True)
    vector_cache.forget()
    base = rss_mb()
    start = time.perf_counter()
    with store.conn:
        bits = vector_cache.current(store)
    build = time.perf_counter() - start
    assert bits is not None
    mem = rss_mb() - base
    start = time.perf_counter()
    vector_cache.load(vector_cache.cache_path(opts.db), opts.dims)
    load_s = time.perf_counter() - start

    base = rss_mb()
    matrix = None if opts.no_exact or opts.truth_from else stored_vectors(n, opts.dims)
    matrix_mb = rss_mb() - base
    picks = rng.integers(0, n, opts.queries)
    if matrix is not None:
        queries = matrix[picks] + 0.05 * rng.standard_normal((opts.queries, opts.dims)).astype(
            np.float32)
    else:
        again = stored_vectors(4096, opts.dims)
        queries = again[picks % 4096] + 0.05 * rng.standard_normal(
            (opts.queries, opts.dims)).astype(np.float32)
    queries /= np.linalg.norm(queries, axis=1, keepdims=True)
    if opts.truth_from:  # queries and exact top 10 saved by an earlier blockwise scan
        queries = np.load(f"{opts.truth_from}.queries.npy")[:opts.queries]
        saved = np.load(f"{opts.truth_from}.truth.npy")[:opts.queries]
    if matrix is not None:
        def exact(q: np.ndarray) -> list[int]:
            sims = matrix @ q
            top = np.argpartition(-sims, K)[:K]
            return (top[np.argsort(-sims[top])] + 1).tolist()
        truth = [set(exact(q)) for q in queries]
    elif opts.truth_from:
        exact = None
        truth = [set(row.tolist()) for row in saved]
    else:
        exact = None
        truth = [{i for i, _ in search_mod._sqlite_hits(store, q, K, None, True)}
                 for q in queries]
    count = coarse_candidates(K, n)

    def today(q: np.ndarray) -> list[int]:
        return [i for i, _ in search_mod._sqlite_hits(store, q, K, None, False)]

    def chosen(q: np.ndarray) -> list[int]:
        return [i for i, _ in vector_hits(store, q, K)]

    packed = np.ascontiguousarray(bits.words).view(np.uint8)

    def with_usearch(q: np.ndarray) -> list[int]:
        from usearch.index import MetricKind
        from usearch.index import search as usearch_search
        qb = np.packbits(q > 0, bitorder="little")
        found = usearch_search(packed, qb, count, MetricKind.Hamming, exact=True, threads=1)
        return [i for i, _ in rescore(store, q, bits.ids[found.keys].tolist(), K)]

    import faiss
    faiss.omp_set_num_threads(1)
    start = time.perf_counter()
    flat = faiss.IndexBinaryFlat(packed.shape[1] * 8)
    flat.add(packed)
    faiss_build = time.perf_counter() - start

    def with_faiss(q: np.ndarray) -> list[int]:
        qb = np.packbits(q > 0, bitorder="little")
        qb = np.pad(qb, (0, packed.shape[1] - len(qb)))[None, :]
        _, found = flat.search(qb, count)
        return [i for i, _ in rescore(store, q, bits.ids[found[0]].tolist(), K)]

    with store.conn:
        if not opts.no_today:
            few = opts.today_queries or len(queries)
            row(f"today: sqlite-vec bit KNN + rescore (no cache; {few} queries)",
                timed(today, queries[:few], truth[:few]), 0, 0)
        row(f"**gguf-embed `vector_hits`: sign bits (faiss scan where they lie) + rescore** "
            f"({count:,} candidates; {'made from SQLite' if opts.rebuild else 'loaded'} in "
            f"{build:.2f} s, loading the file again {load_s:.2f} s)",
            timed(chosen, queries, truth), mem, build)
        row("usearch exact Hamming over the same bits + rescore",
            timed(with_usearch, queries, truth), packed.nbytes / 1e6, 0)
        row("faiss IndexBinaryFlat + rescore", timed(with_faiss, queries, truth),
            packed.nbytes / 1e6, faiss_build)
        if exact is not None:
            row("numpy exact scan (float32 matrix @ q)", timed(exact, queries, truth),
                matrix_mb, 0)
        if opts.hnsw and matrix is not None:
            from usearch.index import Index as UIndex
            start = time.perf_counter()
            hnsw = UIndex(ndim=opts.dims, metric="cos", dtype="i8")
            hnsw.add(np.arange(1, n + 1), matrix, threads=os.cpu_count() or 1)
            hnsw_build = time.perf_counter() - start

            def with_hnsw(q: np.ndarray) -> list[int]:
                return hnsw.search(q, K, threads=1).keys.tolist()
            row("usearch HNSW (int8, cos)", timed(with_hnsw, queries, truth),
                hnsw.memory_usage / 1e6, hnsw_build)
        for group in ("chunk", "file"):
            def grouped(q: np.ndarray, group: str = group) -> list[int]:
                hits = search_mod.search(store, q, "x", k=K, mode="vector", group=group)
                return [h.chunk_id for h in hits]
            stats = timed(grouped, queries, truth)
            row(f"gguf-embed `search(mode=vector, group={group})`", (stats[0], stats[1],
                float("nan")), 0, 0)
    for label, flag in ((("today", True),) if not opts.no_today else ()) + (
            ("gguf-embed, cache file present", False),):
        times = [one_shot(opts.db, queries[i], flag) for i in range(3)]
        print(f"\none-shot ({label}): python start + imports + open + search: "
              f"{', '.join(f'{t * 1000:.0f}' for t in times)} ms")
    rss = warm_rss(opts.db, queries[0])
    print(f"\nA fresh process after 21 `Index.search(mode=vector)` calls: RSS {rss[0]:,} MB "
          f"({rss[1]:,} MB anonymous, {rss[2]:,} MB file-backed: the mapped .bits and "
          f"libraries, shared with the OS page cache)")
    print(f"\nload average {os.getloadavg()[0]:.1f} at the end; RSS of this benchmark process "
          f"{rss_mb():,.0f} MB")


if __name__ == "__main__":
    main()
