#!/usr/bin/env python3
"""Where one warm vector search goes at scale (issue 21): per query, the sign-bit scan, the
first read of its candidates' float vectors, the rescoring arithmetic, then ``vector_hits``,
``search()`` one row per file and one row per chunk; p50 / p95 ms.  Run it with
``PYTHONPATH`` set to each checkout to compare code on the same index.

    python -m scripts.bench_vector_steps --db /tmp/scale/search-1000000-1024.db --dims 1024

``--recall N`` instead prints recall@10 against the number of Hamming candidates (100 to
2,000) for N queries, with the exact top 10 from a block-by-block scan of every stored vector
(``bench_scale``'s synthetic vectors, remade), and saves the queries and answers as
``DB.queries.npy`` / ``DB.truth.npy`` for ``bench_peers --truth-from DB``.
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

import numpy as np

from gguf_embed import search as search_mod
from gguf_embed import vector_cache
from gguf_embed.store import Store
from scripts.bench_scale import Vectors

K = 10


def steps(store: Store, dims: int, count: int) -> None:
    rng = np.random.default_rng(3)
    first = Vectors(dims, seed=11).block(4096)
    qs = first[rng.integers(0, 4096, count)] + 0.05 * rng.standard_normal(
        (count, dims)).astype(np.float32)
    qs /= np.linalg.norm(qs, axis=1, keepdims=True)
    start = time.perf_counter()
    with store.conn:
        bits = vector_cache.current(store)
    assert bits is not None
    candidates = search_mod.coarse_candidates(K, len(bits))
    print(f"{os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f}; {len(bits):,} chunks, "
          f"{dims} dims, {candidates:,} candidates; cache ready in "
          f"{time.perf_counter() - start:.2f} s\n")
    names = ["coarse scan", "first read of the candidates' vectors", "rescoring arithmetic",
             "vector_hits", "search(), one row per file", "search(), one row per chunk"]
    times: list[list[float]] = [[] for _ in names]
    with store.conn:
        bits.nearest(qs[0], candidates)
        for q in qs:
            marks = [time.perf_counter()]
            ids = bits.nearest(q, candidates).tolist()
            marks.append(time.perf_counter())
            _, matrix = store.vectors(ids)
            marks.append(time.perf_counter())
            sims = (matrix @ q) / (np.linalg.norm(matrix, axis=1) * np.linalg.norm(q) + 1e-12)
            np.argsort(-sims)[:50]
            marks.append(time.perf_counter())
            search_mod.vector_hits(store, q, 50, coarse=K)
            marks.append(time.perf_counter())
            search_mod.search(store, q, "x", k=K, mode="vector")
            marks.append(time.perf_counter())
            search_mod.search(store, q, "x", k=K, mode="vector", group="chunk")
            marks.append(time.perf_counter())
            for i in range(len(names)):
                times[i].append((marks[i + 1] - marks[i]) * 1000)
    print("| step | p50 ms | p95 ms |\n| --- | ---: | ---: |")
    for name, ms in zip(names, times, strict=True):
        print(f"| {name} | {np.percentile(ms, 50):.1f} | {np.percentile(ms, 95):.1f} |")
    print(f"\nload average {os.getloadavg()[0]:.1f} at the end")


def recall(store: Store, db: Path, dims: int, count: int) -> None:
    with store.conn:
        bits = vector_cache.current(store)
    assert bits is not None
    n = len(bits)
    rng = np.random.default_rng(3)
    picks = np.sort(rng.integers(0, n, count))
    base = np.empty((count, dims), np.float32)
    made = Vectors(dims, seed=11)
    for start in range(0, n, 4096):
        block = made.block(min(4096, n - start))
        inside = (picks >= start) & (picks < start + len(block))
        base[inside] = block[picks[inside] - start]
    qs = base + 0.05 * rng.standard_normal((count, dims)).astype(np.float32)
    qs /= np.linalg.norm(qs, axis=1, keepdims=True)
    best = np.full((count, K), -np.inf, np.float32)
    best_ids = np.zeros((count, K), np.int64)
    made = Vectors(dims, seed=11)
    for start in range(0, n, 4096):
        block = made.block(min(4096, n - start))
        sims = np.concatenate([best, qs @ block.T], axis=1)
        ids = np.concatenate([best_ids, np.broadcast_to(
            np.arange(start, start + len(block)) + 1, (count, len(block)))], axis=1)
        order = np.argsort(-sims, axis=1)[:, :K]
        best, best_ids = np.take_along_axis(sims, order, 1), np.take_along_axis(ids, order, 1)
    np.save(f"{db}.queries.npy", qs)
    np.save(f"{db}.truth.npy", best_ids)
    truth = [set(row) for row in best_ids.tolist()]
    sizes = [100, 200, 300, 500, 800, 1000, 1250, 2000]
    found: dict[int, list[float]] = {c: [] for c in sizes}
    for q, want in zip(qs, truth, strict=True):
        for c in sizes:  # the nearest c by Hamming distance, as search would take them
            found[c].append(len(set(bits.nearest(q, c).tolist()) & want) / K)
    print(f"{n:,} chunks, {dims} dims, {count} queries\n\n| candidates | recall@10 | worst query |"
          "\n| ---: | ---: | ---: |")
    for c in sizes:
        print(f"| {c:,} | {np.mean(found[c]):.3f} | {np.min(found[c]):.1f} |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--db", type=Path, required=True)
    parser.add_argument("--dims", type=int, default=1024)
    parser.add_argument("--queries", type=int, default=30)
    parser.add_argument("--recall", type=int, default=0, metavar="N")
    opts = parser.parse_args()
    store = Store.open(opts.db, readonly=True)
    if opts.recall:
        recall(store, opts.db, opts.dims, opts.recall)
    else:
        steps(store, opts.dims, opts.queries)


if __name__ == "__main__":
    main()
