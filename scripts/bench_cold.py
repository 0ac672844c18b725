"""Vector search with the index file's pages not in the OS page cache (cold) and in it (warm).

Before each cold query the index file's pages are dropped from the page cache
(``posix_fadvise(DONTNEED)`` on INDEX, not on INDEX.bits, which a long-running process keeps
hot); the warm query is the same query again right after, and "again" once more (the first
search after a cold one can still meet the cold read's after-effects in the kernel).  Each
query runs as ``Index.search`` runs it: one read transaction, ``search.vector_hits`` (sign-bit
coarse pass, exact rescoring from SQLite).  Recall@10 is against the exact top 10 in TRUTH.
``--one-shot`` runs each cold query in a fresh process instead (``--peer`` adds main's code).

    python -m scripts.bench_cold /tmp/issue21/search-1000000-2560.db \\
        --queries-file Q.npy --truth-file T.npy --candidates 1000 800

Run it with ``PYTHONPATH=/work/main`` for main's code (the path is then ``today``); on a
checkout with ``gguf_embed.store_read`` it times the serial read beside the parallel one.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from gguf_embed import search, vector_cache
from gguf_embed.store import Store

try:
    from gguf_embed import store_read
except ImportError:  # main's code, before this change
    store_read = None  # type: ignore[assignment]


def evict(path: Path) -> None:
    """Drop a file's clean pages from the OS page cache."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
    finally:
        os.close(fd)


@contextlib.contextmanager
def settings(path: str, candidates: int, chunks: int) -> Iterator[None]:
    """The coarse pass asks for ``candidates`` (via COARSE_SHARE) and the read path."""
    old_share = search.COARSE_SHARE
    old_from = store_read.PARALLEL_FROM if store_read is not None else 0
    search.COARSE_SHARE = max(1, chunks // candidates)
    if store_read is not None and path == "serial":
        store_read.PARALLEL_FROM = 1 << 62
    try:
        yield
    finally:
        search.COARSE_SHARE = old_share
        if store_read is not None:
            store_read.PARALLEL_FROM = old_from


def _parallel_reads() -> int:
    return store_read.parallel_reads if store_read is not None else 0


def run(db: Path, queries: np.ndarray, truth: np.ndarray | None,
        setups: list[tuple[str, int]], pause: float = 0.0) -> list[str]:
    """One table row per (read path, candidates), the setups taking turns query by query
    (each sees the same machine: other work on the host comes and goes)."""
    store = Store.open(db, readonly=True)
    try:
        with store.conn:
            bits = vector_cache.current(store)  # loads INDEX.bits (kept hot, as in a process)
        assert bits is not None
        chunks = len(bits)
        times: dict[tuple[str, int], tuple[list[float], list[float], list[float],
                                          list[float]]] = {
            setup: ([], [], [], []) for setup in setups}
        shared = {(setup, phase): 0 for setup in setups for phase in ("cold", "warm", "again")}
        for i, q in enumerate(queries):
            for setup in setups:
                cold, warm, again, recall = times[setup]
                with settings(*setup, chunks):
                    for into in (cold, warm, again):
                        if into is cold:
                            evict(db)
                        else:
                            time.sleep(pause)  # the cold read's tail (readahead) settles
                        before = _parallel_reads()
                        start = time.perf_counter()
                        with store.conn:  # one read transaction, as Index.search
                            hits = search.vector_hits(store, q, 10)
                        into.append((time.perf_counter() - start) * 1000)
                        phase = "cold" if into is cold else "warm" if into is warm else "again"
                        shared[setup, phase] += _parallel_reads() - before
                if truth is not None:
                    recall.append(len({c for c, _ in hits} & set(truth[i].tolist())) / 10)
        return [f"| {chunks:,} | {queries.shape[1]} | {path} | {candidates:,} | "
                f"{np.percentile(cold, 50):.1f} | {np.percentile(cold, 95):.1f} | "
                f"{np.percentile(warm, 50):.1f} | {np.percentile(warm, 95):.1f} | "
                f"{np.percentile(again, 50):.1f} | {np.percentile(again, 95):.1f} | "
                f"{np.mean(recall) if recall else float('nan'):.3f} | "
                f"{shared[(path, candidates), 'cold']}/{len(cold)}, "
                f"{shared[(path, candidates), 'warm']}/{len(warm)}, "
                f"{shared[(path, candidates), 'again']}/{len(again)} |"
                for (path, candidates), (cold, warm, again, recall) in times.items()]
    finally:
        store.close()


def one_shot(args: argparse.Namespace, setups: list[tuple[str, int]]) -> list[str]:
    """Each query in a fresh process per setup (taking turns): the first search of a process,
    the index's pages dropped before it, INDEX.bits read from the file (as hot as the OS keeps
    it), the reader threads and their connections started inside the time."""
    if args.peer is not None:  # another checkout's code (main: "today"), taking turns too
        setups = [("today", c) for c in args.candidates] + setups
    times: dict[tuple[str, int], list[float]] = {setup: [] for setup in setups}
    for i in range(args.offset, args.offset + args.queries):
        for path, candidates in setups:
            env = dict(os.environ)
            if path == "today":
                env["PYTHONPATH"] = str(args.peer)
            out = subprocess.run(
                [sys.executable, __file__, str(args.db), "--queries-file",
                 str(args.queries_file), "--offset", str(i), "--queries", "1", "--paths", path,
                 "--candidates", str(candidates), "--child"],
                check=True, capture_output=True, text=True, env=env).stdout
            times[path, candidates].append(float(out.split()[-1]))
    return [f"| one-shot process | {path} | {candidates:,} | {np.percentile(ms, 50):.1f} | "
            f"{np.percentile(ms, 95):.1f} |" for (path, candidates), ms in times.items()]


def child(args: argparse.Namespace) -> None:
    """The ``--child`` of :func:`one_shot`: one cold search, its milliseconds on stdout."""
    q = np.load(args.queries_file)[args.offset].astype(np.float32)
    store = Store.open(args.db, readonly=True)
    with store.conn:
        bits = vector_cache.current(store)
    assert bits is not None
    with settings(args.paths[0], args.candidates[0], len(bits)):
        evict(args.db)
        start = time.perf_counter()
        with store.conn:
            search.vector_hits(store, q, 10)
        print(f"{(time.perf_counter() - start) * 1000:.3f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("db", type=Path)
    parser.add_argument("--queries-file", type=Path, required=True,
                        help="query vectors (.npy, [n, dims], unit length)")
    parser.add_argument("--truth-file", type=Path, default=None,
                        help="the exact top 10 chunk ids of each query (.npy, [n, 10])")
    parser.add_argument("--queries", type=int, default=20, help="how many of them to run")
    parser.add_argument("--offset", type=int, default=0, help="the first query to run")
    parser.add_argument("--candidates", type=int, nargs="+", default=[1000])
    parser.add_argument("--paths", nargs="+", default=None,
                        help="serial, parallel (default: both; 'today' on main's code)")
    parser.add_argument("--pause-ms", type=float, default=0.0,
                        help="wait this long between a query's cold and warm runs")
    parser.add_argument("--one-shot", action="store_true",
                        help="each query in a fresh process (cold only)")
    parser.add_argument("--peer", type=Path, default=None,
                        help="with --one-shot: also time this checkout's code (e.g. main)")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--header", action="store_true")
    args = parser.parse_args()
    if args.child:
        return child(args)
    chosen = slice(args.offset, args.offset + args.queries)
    queries = np.load(args.queries_file)[chosen].astype(np.float32)
    truth = np.load(args.truth_file)[chosen] if args.truth_file else None
    paths = args.paths or (["serial", "parallel"] if store_read is not None else ["today"])
    if args.header:
        print("| chunks | dims | read | candidates | cold p50 ms | cold p95 ms | warm p50 ms "
              "| warm p95 ms | again p50 ms | again p95 ms | recall@10 "
              "| read by threads (cold, warm, again) |")
        print("| ---: | ---: | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: "
              "| ---: |")
    setups = [(path, candidates) for candidates in args.candidates for path in paths]
    if args.one_shot:
        print("\n".join(one_shot(args, setups)), flush=True)
        return None
    print("\n".join(run(args.db, queries, truth, setups, args.pause_ms / 1000)), flush=True)


if __name__ == "__main__":
    main()
