#!/usr/bin/env python3
"""Vector search latency (p50/p95) and recall@10 at 10k and 100k chunks, side by side:

  * an exact scan with sqlite-vec's cosine distance (what gguf-embed does below 10k chunks)
  * gguf-embed's coarse KNN on sign bits in sqlite-vec + exact rescoring (from 10k chunks up)
  * exact numpy search over an in-memory matrix (the peer, and the truth for recall)

Vectors are clustered synthetic embeddings (1,000 topics, unit length), queries are perturbed
stored vectors.  ``--dims`` defaults to 1024 (Qwen3-Embedding-0.6B).

    python -m scripts.bench_search                 # 10k and 100k chunks
    python -m scripts.bench_search --sizes 10000
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path
from types import SimpleNamespace

import numpy as np

from gguf_embed._vectors import vec_blob
from gguf_embed.search import vector_hits
from gguf_embed.store import Store

ROOT = Path(__file__).resolve().parent.parent

K = 10


def synthetic(n: int, dims: int, rng: np.random.Generator) -> np.ndarray:
    topics = rng.standard_normal((1000, dims)).astype(np.float32)
    data = topics[rng.integers(0, 1000, n)] + 0.9 * rng.standard_normal((n, dims)).astype(
        np.float32)
    return data / np.linalg.norm(data, axis=1, keepdims=True)


def build(store: Store, vectors: np.ndarray) -> None:
    store.ensure_vectors(vectors.shape[1])
    per_doc = 10
    for start in range(0, len(vectors), 1000):
        with store.transaction():
            for d in range(start, min(start + 1000, len(vectors)), per_doc):
                part = vectors[d:d + per_doc]
                chunks = [SimpleNamespace(text=f"chunk {d + i}", start_line=i + 1,
                                          end_line=i + 1, start_page=None, end_page=None,
                                          n_tokens=3, hash=f"h{d + i}")
                          for i in range(len(part))]
                store.write_document(path=f"/doc/{d}", hash=f"d{d}", size=1, mtime=0.0,
                                     kind="text", chunks=chunks,
                                     vectors=[vec_blob(v) for v in part])


def percentile(values: list[float], p: float) -> float:
    return float(np.percentile(np.array(values) * 1000, p))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[10_000, 100_000])
    parser.add_argument("--dims", type=int, default=1024)
    parser.add_argument("--queries", type=int, default=100)
    opts = parser.parse_args()
    rng = np.random.default_rng(7)
    print(f"{opts.dims}-dim vectors, {opts.queries} queries, k={K}\n")
    print("| chunks | method | p50 ms | p95 ms | recall@10 |")
    print("| ---: | --- | ---: | ---: | ---: |")
    for n in opts.sizes:
        vectors = synthetic(n, opts.dims, rng)
        picks = rng.integers(0, n, opts.queries)
        queries = vectors[picks] + 0.05 * rng.standard_normal((opts.queries, opts.dims)).astype(
            np.float32)
        queries /= np.linalg.norm(queries, axis=1, keepdims=True)
        with tempfile.TemporaryDirectory() as tmp:
            store = Store.open(Path(tmp) / "bench.db")
            t0 = time.perf_counter()
            build(store, vectors)
            print(f"<!-- built {n} chunks in {time.perf_counter() - t0:.1f} s -->",
                  file=sys.stderr)
            ids = np.array([r[0] for r in store.conn.execute("SELECT id FROM chunks ORDER BY id")])
            truth, numpy_times = [], []
            for q in queries:
                t = time.perf_counter()
                top = np.argsort(-(vectors @ q))[:K]
                numpy_times.append(time.perf_counter() - t)
                truth.append(set(ids[top].tolist()))
            for label, exact in (("sqlite-vec exact scan", True),
                                 ("gguf-embed bits + rescore", False)):
                times, recalls = [], []
                vector_hits(store, queries[0], K, exact=exact)  # warm the page cache
                for q, want in zip(queries, truth, strict=True):
                    t = time.perf_counter()
                    hits = vector_hits(store, q, K, exact=exact)
                    times.append(time.perf_counter() - t)
                    recalls.append(len({h for h, _ in hits} & want) / K)
                print(f"| {n:,} | {label} | {percentile(times, 50):.1f} | "
                      f"{percentile(times, 95):.1f} | {np.mean(recalls):.3f} |")
            print(f"| {n:,} | numpy exact (in memory) | {percentile(numpy_times, 50):.1f} | "
                  f"{percentile(numpy_times, 95):.1f} | 1.000 |")
            store.close()


if __name__ == "__main__":
    main()
