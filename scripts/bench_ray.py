#!/usr/bin/env python3
"""What `--ray` costs on one machine: the same pages indexed locally (one engine, all cores)
and on a local Ray cluster (2 CPU actors of 1 thread each, the head tokenizing and writing),
in one run, same model (locally with all cores and with 1 thread: on a busy host llama.cpp's
threads wait on each other).  On one small box Ray cannot be faster; this measures its overhead:
cluster start-up, actor model loads, and the steady embedding rate.

    python -m scripts.bench_ray                              # 150 pages of tests/data
    python -m scripts.bench_ray --corpus ../shared/corpora --pages 600
"""

from __future__ import annotations

import argparse
import os
import shutil
import tempfile
import time
from pathlib import Path

from gguf_embed import Engine, Index, RayExecutor

ROOT = Path(__file__).resolve().parent.parent


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path,
                        default=ROOT / "models" / "all-minilm-l6-v2-f16.gguf")
    parser.add_argument("--corpus", type=Path, default=ROOT / "tests" / "data")
    parser.add_argument("--pages", type=int, default=150)
    parser.add_argument("--cpus", type=int, default=os.cpu_count() or 2,
                        help="Ray CPUs (one 1-thread actor each)")
    opts = parser.parse_args()
    import ray

    with tempfile.TemporaryDirectory() as tmp:
        docs = Path(tmp) / "docs"
        docs.mkdir()
        for page in sorted((opts.corpus / "tldr-linux" / "pages").glob("*.md"))[:opts.pages]:
            shutil.copy(page, docs / page.name)
        rows = []

        for threads in sorted({1, os.cpu_count() or 1}, reverse=True):
            engine = Engine(opts.model, n_threads=threads)
            engine.embed(["warm up"])
            start = time.perf_counter()
            with Index(Path(tmp) / f"local{threads}.db", engine) as index:
                local = index.add([docs])
            rows.append((f"local: one engine, {threads} thread(s)", 0.0,
                         time.perf_counter() - start, local))
            engine.close()

        start = time.perf_counter()
        ray.init(num_cpus=opts.cpus, include_dashboard=False, log_to_driver=False,
                 logging_level="warning")
        cluster = time.perf_counter() - start
        with RayExecutor() as executor, Engine(opts.model, vocab_only=True) as head, \
                Index(Path(tmp) / "ray.db", head, model_ref=str(opts.model)) as index:
            start = time.perf_counter()
            executor.start(head, str(opts.model))
            actors = time.perf_counter() - start
            start = time.perf_counter()
            remote = index.add([docs], executor=executor)
            rows.append((f"--ray: {len(executor.handles)} actors x 1 thread",
                         cluster + actors, time.perf_counter() - start, remote))
        ray.shutdown()
    print(f"model: {opts.model.name}, {opts.pages} tldr pages, {local.chunks} chunks, "
          f"{local.tokens_embedded:,} tokens, {os.cpu_count()} CPUs\n")
    print(f"Ray start-up: cluster {cluster:.1f} s, actors (model loads) {actors:.1f} s\n")
    print("| run | start-up s | indexing s | tokens/s |")
    print("| --- | ---: | ---: | ---: |")
    for name, setup, seconds, summary in rows:
        assert summary.chunks == local.chunks and not summary.failed
        print(f"| {name} | {setup:.1f} | {seconds:.1f} | "
              f"{summary.tokens_embedded / seconds:,.0f} |")


if __name__ == "__main__":
    main()
