#!/usr/bin/env python3
"""One result per file against one per chunk (issue 21: "per-file grouping no slower than
per-chunk"), paired: every query vector is searched in both groupings, one after the other,
the order turned round from one search to the next, so that what the host does meanwhile (the
other processes of a shared 2-core machine, pages the OS reclaims) falls on both alike.  Each
query's searches are first run once untimed (their candidates' pages cached), unless
``--cold`` drops INDEX's pages from the OS's page cache before every timed search.

Where the time goes is timed too: the sign-bit scan, reading the candidates' vectors, each
candidate's document (what grouping by file needs), the rows shown and their snippets.

    python -m scripts.bench_grouping --db /tmp/issue21/search-1000000-1024.db
    python -m scripts.bench_grouping --db DB --modes vector --cold --queries 20

The index is one of bench_scale's (``--keep DIR``: DIR/search-N-DIMS.db); its queries are
bench_scale's (stored vectors of the first 4,096 chunks, perturbed).
"""

from __future__ import annotations

import argparse
import os
import time
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from gguf_embed import Index, store_read, vector_cache
from gguf_embed import search as search_module
from gguf_embed import store_keyword_postings as keyword_postings
from gguf_embed.store import Store
from scripts.bench_scale import QueryEngine, Vectors, queries

GROUPS = ("file", "chunk")
PHASES = ("scan", "reads", "documents", "rows", "snippets")


class Phases:
    """Seconds spent in each phase, per search (the last search's, then kept)."""

    def __init__(self) -> None:
        self.now: dict[str, float] = defaultdict(float)

    def wrap(self, owner: Any, name: str, phase: str) -> None:
        real: Callable[..., Any] = getattr(owner, name)

        def timed(*args: Any, **kwargs: Any) -> Any:
            start = time.perf_counter()
            try:
                return real(*args, **kwargs)
            finally:
                self.now[phase] += time.perf_counter() - start

        setattr(owner, name, timed)


def drop_pages(path: Path) -> None:
    """Drop INDEX's clean pages from the OS's page cache (not INDEX.bits': a long-running
    process keeps those hot by scanning them)."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
    finally:
        os.close(fd)


def cpu_name() -> str:
    with open("/proc/cpuinfo", encoding="utf-8") as f:
        return next((line.split(":", 1)[1].strip() for line in f
                     if line.startswith("model name")), "unknown CPU")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--db", type=Path, required=True, help="a bench_scale index")
    parser.add_argument("--modes", nargs="+", default=["vector", "hybrid"],
                        choices=["vector", "hybrid", "keyword"])
    parser.add_argument("--queries", type=int, default=30)
    parser.add_argument("--reps", type=int, default=2, help="timed searches per query and "
                        "grouping (default 2)")
    parser.add_argument("--cold", action="store_true", help="drop INDEX's pages before every "
                        "timed search (no untimed search first)")
    opts = parser.parse_args()
    phases = Phases()
    phases.wrap(vector_cache.Bits, "nearest", "scan")
    phases.wrap(store_read, "read_vectors", "reads")
    if hasattr(search_module, "chunk_docs"):  # the cache's table, else SQLite
        phases.wrap(search_module, "chunk_docs", "documents")
    else:  # code from before the cache held documents
        phases.wrap(Store, "chunk_docs", "documents")
    phases.wrap(Store, "chunk_rows", "rows")
    phases.wrap(search_module, "snippet", "snippets")

    words = queries(count=opts.queries)
    print(f"{cpu_name()}, {os.cpu_count()} logical CPUs, load average "
          f"{os.getloadavg()[0]:.2f} at the start; {opts.db}, {len(words)} queries x "
          f"{opts.reps} paired searches, k=10, {'cold' if opts.cold else 'warm'}\n")
    print("| mode | one row per | p50 ms | p95 ms | mean ms | "
          + " | ".join(f"{p} ms" for p in PHASES) + " |")
    print("| --- | --- | ---: | ---: | ---: | " + " | ".join("---:" for _ in PHASES) + " |")
    store = Store.open(opts.db, readonly=True)
    dims, chunks = store.dims or 0, store.chunk_count()
    store.close()
    engine = QueryEngine(dims)
    vector_cache.forget()
    with Index(opts.db, engine, readonly=True) as index:
        rng = np.random.default_rng(3)  # bench_scale's queries: its picks, its noise
        first = Vectors(dims, seed=11).block(min(chunks, 4096))
        picks = first[rng.integers(0, len(first), len(words))]
        vectors = [p + 0.05 * rng.standard_normal(dims).astype(np.float32) for p in picks]
        engine.queued = [vectors[0]]
        index.search(words[0], mode="vector")  # the sign bits, loaded once

        def run(query: str, vector: np.ndarray, mode: str, group: str) -> float:
            engine.queued = [vector]
            search_module.forget_recent()  # the ranking, not a kept keyword answer
            phases.now.clear()
            start = time.perf_counter()
            index.search(query, k=10, mode=mode, group=group)
            return time.perf_counter() - start

        summary = []
        for mode in opts.modes:
            times: dict[str, list[float]] = {g: [] for g in GROUPS}
            spent: dict[str, dict[str, float]] = {g: defaultdict(float) for g in GROUPS}
            for i, (query, vector) in enumerate(zip(words, vectors, strict=True)):
                order = GROUPS if i % 2 == 0 else GROUPS[::-1]
                if not opts.cold:
                    for group in order:
                        run(query, vector, mode, group)
                keyword_postings.wait()  # postings its words read in the background: not
                # while one grouping is timed and the other not
                for rep in range(opts.reps):
                    for group in order if rep % 2 == 0 else order[::-1]:
                        if opts.cold:
                            drop_pages(opts.db)
                        times[group].append(run(query, vector, mode, group))
                        for phase, seconds in phases.now.items():
                            spent[group][phase] += seconds
            for group in GROUPS:
                ms = np.array(times[group]) * 1000
                print(f"| {mode} | {group} | {np.percentile(ms, 50):.1f} | "
                      f"{np.percentile(ms, 95):.1f} | {ms.mean():.1f} | " + " | ".join(
                          f"{spent[group][p] * 1000 / len(ms):.2f}" for p in PHASES) + " |",
                      flush=True)
            diff = (np.array(times["file"]) - np.array(times["chunk"])) * 1000
            summary.append(f"{mode}: per file minus per chunk, same query: median "
                           f"{np.median(diff):+.2f} ms, mean {diff.mean():+.2f} ms; per file "
                           f"slower in {(diff > 0).sum()} of {len(diff)}")
    print("\n" + "\n".join(summary))
    print(f"\nload average {os.getloadavg()[0]:.2f} at the end")


if __name__ == "__main__":
    main()
