#!/usr/bin/env python3
"""Retrieval eval of reranking on the tldr pages (tests/support/eval.py's recipe): MRR@10 and
Recall@10 of hybrid search, then of the same search reranked with blend weights 0..1
(1.0: the reranker's order replaces the fused one).

    python -m scripts.eval_rerank --reranker models/tiny-xlmr-reranker-f32.gguf --count 300

With a random-weight reranker this measures no quality, only how much of the fused order each
blend keeps when the reranker is useless (its floor); run it with real weights to choose.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

from gguf_embed import Engine, Index, Reranker, RerankOptions
from tests.support.eval import build_docs, metrics, ranks_from_chunks

ROOT = Path(__file__).resolve().parent.parent


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, default=ROOT / "models" / "all-minilm-l6-v2-f16.gguf")
    parser.add_argument("--reranker", type=Path, required=True)
    parser.add_argument("--corpus", type=Path, default=ROOT / "tests" / "data",
                        help="holds tldr-linux/pages")
    parser.add_argument("--count", type=int, default=300)
    parser.add_argument("--candidates", type=int, default=30)
    parser.add_argument("--weights", type=float, nargs="+", default=[0.5, 0.7, 1.0])
    opts = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp, Engine(opts.model) as engine, \
            Reranker(opts.reranker) as reranker:
        docs = Path(tmp) / "docs"
        docs.mkdir()
        queries = build_docs(opts.corpus, docs, opts.count)
        with Index(Path(tmp) / "eval.db", engine) as index:
            index.add([docs])
            truth = list(queries)
            print(f"| {opts.count} pages, {opts.model.name} | reranker | MRR@10 | Recall@10 "
                  f"| s/query |")
            print("| --- | --- | ---: | ---: | ---: |")
            runs: list[tuple[str, RerankOptions | None]] = [("hybrid (fused)", None)]
            runs += [(f"blend weight {w}", RerankOptions(candidates=opts.candidates, weight=w))
                     for w in opts.weights]
            for label, options in runs:
                start = time.perf_counter()
                hits = [[r.path for r in index.search(
                    queries[p], k=10, rerank=reranker if options else None,
                    rerank_options=options)] for p in truth]
                seconds = (time.perf_counter() - start) / len(truth)
                m = metrics(ranks_from_chunks(hits, truth))
                name = opts.reranker.name if options else "-"
                print(f"| {label} | {name} | {m['mrr@10']} | {m['recall@10']} "
                      f"| {seconds:.3f} |", flush=True)


if __name__ == "__main__":
    main()
