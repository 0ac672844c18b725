#!/usr/bin/env python3
"""gguf-embed in a desktop app: search latency while a worker thread indexes, and memory.

    python -m scripts.bench_desktop latency --peer /tmp/base   # this code vs the code in /tmp/base
    python -m scripts.bench_desktop memory --model models/all-minilm-l6-v2-f16.gguf
    python -m scripts.bench_desktop latency --base-pages 10 --pages 5 --repeat 1  # a quick check

The tldr pages come from --corpus (default tests/data; a folder with tldr-linux/pages).  Each
round runs in its own process started with PYTHONPATH set to the code it measures (this
checkout or --peer), so a peer needs no install.

latency: one process, one engine.  A base index of tldr pages is built; then, per round and per
code (this checkout, and --peer, interleaved, each in its own process):
  idle      UI-thread searches (query embedding + hybrid search), nothing else running;
  add       a worker thread's ``Index.add`` of more pages alone: tokens/s, and each decode's time;
  both      the same ``add`` while the UI thread searches every --pause seconds.
memory: RSS with the model loaded and idle, at its peak while indexing, after ``IdleEngine``
unloads the model, and the first request after that (which loads it again) against a warm one.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
QUERIES = ["how do I compress a folder", "list open network ports", "change file permissions",
           "show disk usage", "search text in files", "download a file over http",
           "rename many files", "monitor running processes", "schedule a job", "edit an image"]


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def rss_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def copy_pages(corpus: Path, dest: Path, start: int, count: int) -> Path:
    dest.mkdir(parents=True, exist_ok=True)
    pages = sorted((corpus / "tldr-linux" / "pages").glob("*.md"))[start:start + count]
    for page in pages:
        shutil.copy(page, dest / page.name)
    return dest


# ---------------------------------------------------------------------------------- latency
def one_round(opts: argparse.Namespace) -> dict[str, Any]:
    """Runs inside the process of the code measured (PYTHONPATH set by the parent)."""
    from gguf_embed import Engine, Index

    engine = Engine(opts.model)
    context = engine._packed_context() if hasattr(engine, "_packed_context") else None
    decode_times: list[float] = []
    if context is not None:
        decode = context.decode

        def timed(seqs: Any) -> Any:
            start = time.perf_counter()
            try:
                return decode(seqs)
            finally:
                decode_times.append(time.perf_counter() - start)

        context.decode = timed
    engine.embed(["warm up"], query=True)
    import gguf_embed

    out: dict[str, Any] = {"code": str(Path(gguf_embed.__file__).resolve().parent.parent)}
    with tempfile.TemporaryDirectory() as tmp:
        base_docs = copy_pages(opts.corpus, Path(tmp) / "base", 0, opts.base_pages)
        more = copy_pages(opts.corpus, Path(tmp) / "more", opts.base_pages, opts.pages)
        base_db = Path(tmp) / "base.db"
        with Index(base_db, engine) as index:
            index.add([base_docs])

        def fresh_db(name: str) -> Path:
            db = Path(tmp) / f"{name}.db"
            for suffix in ("", "-wal"):  # WAL mode: recent commits live in the -wal file
                if Path(f"{base_db}{suffix}").exists():
                    shutil.copy(f"{base_db}{suffix}", f"{db}{suffix}")
            return db

        def searches(db: Path, until: threading.Event | None, count: int) -> list[float]:
            times = []
            with Index(db, engine, readonly=True) as ui:
                i = 0
                while (until is None and i < count) or (until is not None and not until.is_set()):
                    start = time.perf_counter()
                    ui.search(QUERIES[i % len(QUERIES)], k=10)
                    times.append(time.perf_counter() - start)
                    i += 1
                    time.sleep(opts.pause)
            return times

        def add(db: Path, done: threading.Event, result: dict[str, Any]) -> None:
            with Index(db, engine) as index:
                start = time.perf_counter()
                summary = index.add([more])
                result["seconds"] = time.perf_counter() - start
                result["tokens"] = summary.tokens_embedded
            done.set()

        idle = searches(fresh_db("idle"), None, opts.searches)
        decode_times.clear()
        alone: dict[str, Any] = {}
        add(fresh_db("alone"), threading.Event(), alone)
        decodes = list(decode_times)
        both: dict[str, Any] = {}
        done = threading.Event()
        db = fresh_db("both")
        worker = threading.Thread(target=add, args=(db, done, both))
        worker.start()
        during = searches(db, done, 0)
        worker.join()
    out["idle"] = idle
    out["during"] = during
    out["add_alone_tps"] = alone["tokens"] / alone["seconds"]
    out["add_both_tps"] = both["tokens"] / both["seconds"]
    out["decode_p50"] = statistics.median(decodes) if decodes else 0.0
    out["decode_p95"] = percentile(decodes, 0.95) if decodes else 0.0
    out["tokens"] = alone["tokens"]
    engine.close()
    return out


def latency(opts: argparse.Namespace) -> None:
    codes = [("this", ROOT)] + ([("peer", opts.peer)] if opts.peer else [])
    results: dict[str, list[dict[str, Any]]] = {name: [] for name, _ in codes}
    for r in range(opts.repeat):
        for name, code in codes if r % 2 == 0 else reversed(codes):
            # run by path, the import path starts at scripts/: gguf_embed comes from PYTHONPATH
            args = [sys.executable, __file__, "round", "--model",
                    str(opts.model), "--corpus", str(opts.corpus), "--pages", str(opts.pages),
                    "--base-pages", str(opts.base_pages), "--searches", str(opts.searches),
                    "--pause", str(opts.pause)]
            env = {**os.environ, "PYTHONPATH": str(code)}  # the round imports code's gguf_embed
            done = subprocess.run(args, capture_output=True, text=True, check=True, env=env)
            results[name].append(json.loads(done.stdout.strip().splitlines()[-1]))
            measured = results[name][-1]["code"]  # the code the round imported
            assert measured == str(Path(code).resolve()), f"{name} ran {measured}"
            print(f"round {r + 1} {name}: done", file=sys.stderr)
    print(f"model: {Path(opts.model).name}; base index {opts.base_pages} tldr pages; the "
          f"worker adds {opts.pages} more ({results['this'][0]['tokens']:,} tokens); "
          f"searches every {opts.pause * 1000:.0f} ms; {opts.repeat} rounds, interleaved\n")
    print("| code | idle p50 | idle p95 | during add p50 | during add p95 | decode p50 | "
          "decode p95 | add alone tok/s | add + searches tok/s |")
    print("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
    for name, _ in codes:
        rows = results[name]
        idle = [t for row in rows for t in row["idle"]]
        during = [t for row in rows for t in row["during"]]
        ms = lambda v: f"{v * 1000:.0f} ms"  # noqa: E731
        print(f"| {name} | {ms(statistics.median(idle))} | {ms(percentile(idle, 0.95))} | "
              f"{ms(statistics.median(during))} | {ms(percentile(during, 0.95))} | "
              f"{ms(statistics.median(r['decode_p50'] for r in rows))} | "
              f"{ms(statistics.median(r['decode_p95'] for r in rows))} | "
              f"{statistics.median(r['add_alone_tps'] for r in rows):,.0f} | "
              f"{statistics.median(r['add_both_tps'] for r in rows):,.0f} |")
    print("\nper round, add alone tok/s: " + "; ".join(
        f"{name} " + ", ".join(f"{r['add_alone_tps']:,.0f}" for r in results[name])
        for name, _ in codes))


# ---------------------------------------------------------------------------------- memory
def memory(opts: argparse.Namespace) -> None:
    from gguf_embed import IdleEngine, Index

    base = rss_mb()
    engine = IdleEngine(opts.model, unload_after=opts.unload_after)
    engine.embed(["warm up"], query=True)
    idle = rss_mb()
    peak = [idle]
    with tempfile.TemporaryDirectory() as tmp:
        docs = copy_pages(opts.corpus, Path(tmp) / "docs", 0, opts.pages)
        done = threading.Event()

        def sample() -> None:
            while not done.is_set():
                peak[0] = max(peak[0], rss_mb())
                time.sleep(0.02)

        sampler = threading.Thread(target=sample)
        sampler.start()
        with Index(Path(tmp) / "m.db", engine) as index:
            summary = index.add([docs])
        done.set()
        sampler.join()
    start = time.perf_counter()
    engine.embed(["a warm query"], query=True)
    warm = time.perf_counter() - start
    while engine.loaded:
        time.sleep(0.05)
    unloaded = rss_mb()
    start = time.perf_counter()
    engine.embed(["the first query after unloading"], query=True)
    first = time.perf_counter() - start
    reloaded = rss_mb()
    engine.close()
    closed = rss_mb()
    print(json.dumps({
        "model": Path(opts.model).name, "size_mb": round(Path(opts.model).stat().st_size / 1e6),
        "rss_before_load_mb": round(base), "rss_idle_loaded_mb": round(idle),
        "rss_peak_indexing_mb": round(peak[0]), "rss_after_unload_mb": round(unloaded),
        "rss_after_reload_mb": round(reloaded), "rss_after_close_mb": round(closed),
        "warm_query_ms": round(warm * 1000, 1), "first_query_after_unload_ms":
        round(first * 1000, 1), "load_ms": round(engine.last_load_seconds * 1000, 1),
        "indexed_tokens": summary.tokens_embedded}, indent=1))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("what", choices=["latency", "memory", "round"])
    parser.add_argument("--model", type=Path, default=ROOT / "models" / "all-minilm-l6-v2-f16.gguf")
    parser.add_argument("--corpus", type=Path, default=ROOT / "tests" / "data",
                        help="A folder with tldr-linux/pages (default: tests/data).")
    parser.add_argument("--pages", type=int, default=138, help="Pages the worker adds.")
    parser.add_argument("--base-pages", type=int, default=200)
    parser.add_argument("--searches", type=int, default=40, help="Idle searches per round.")
    parser.add_argument("--pause", type=float, default=0.05, help="Seconds between searches.")
    parser.add_argument("--repeat", type=int, default=2)
    parser.add_argument("--peer", type=Path, default=None,
                        help="A checkout of other gguf-embed code to compare with.")
    parser.add_argument("--unload-after", type=float, default=1.0)
    opts = parser.parse_args()
    if opts.what == "round":
        print(json.dumps(one_round(opts)))
    elif opts.what == "latency":
        latency(opts)
    else:
        memory(opts)


if __name__ == "__main__":
    main()
