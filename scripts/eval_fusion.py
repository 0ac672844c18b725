#!/usr/bin/env python3
"""Which hybrid fusion ranks *files* best: MRR@10 and Recall@10 over files, for several fusions
of the same vector and keyword candidate lists, on the tldr eval recipe (tests/support/eval.py).

    python -m scripts.eval_fusion                       # MiniLM, English and Chinese
    python -m scripts.eval_fusion --lang en --count 600
    python -m scripts.eval_fusion --corpus ../shared/corpora   # all the tldr-cjk pages too

Query sets, to see that a choice is not tuned to one of them: "desc" (each page's first `> `
line, the recipe; also split into even and odd pages) and "example" (each page's first example
description, a shorter, more literal query; that line stays in the page).  The last row runs
the library's own `Index.search_many(group="file")` and must equal the row of the fusion it uses.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

from gguf_embed import Engine, fusion
from gguf_embed.index import Index
from gguf_embed.search import FILE_POOL, keyword_hits, vector_hits
from tests.support.eval import K, build_docs, metrics

ROOT = Path(__file__).resolve().parent.parent

Hits = list[tuple[int, float]]
Fuser = Callable[[Hits, Hits, Mapping[int, int]], list[int]]  # → file ids, best first


def chunk_rrf(k: float) -> Fuser:
    def fuse(vec: Hits, kw: Hits, doc_of: Mapping[int, int]) -> list[int]:
        scores = fusion.rrf([vec, kw], k)
        ranked = sorted(scores.items(), key=lambda item: (-item[1], item[0]))
        return [d for d, _, _ in fusion.best_per_file(ranked, doc_of)]
    return fuse


def file_rrf(k: float) -> Fuser:
    def fuse(vec: Hits, kw: Hits, doc_of: Mapping[int, int]) -> list[int]:
        return [d for d, _, _ in fusion.fuse_files([vec, kw], doc_of, k)]
    return fuse


def convex(alpha: float) -> Fuser:
    """alpha * vector + (1 - alpha) * keyword, each min-max normalized over its files."""
    def norm(hits: Hits, doc_of: Mapping[int, int]) -> dict[int, float]:
        files = fusion.best_per_file(hits, doc_of)
        if not files:
            return {}
        top, low = files[0][2], files[-1][2]
        span = (top - low) or 1.0
        return {d: (s - low) / span for d, _, s in files}

    def fuse(vec: Hits, kw: Hits, doc_of: Mapping[int, int]) -> list[int]:
        v, w = norm(vec, doc_of), norm(kw, doc_of)
        scores = {d: alpha * v.get(d, 0.0) + (1 - alpha) * w.get(d, 0.0) for d in v.keys() | w}
        return sorted(scores, key=lambda d: (-scores[d], d))
    return fuse


def only(which: int) -> Fuser:
    def fuse(vec: Hits, kw: Hits, doc_of: Mapping[int, int]) -> list[int]:
        return [d for d, _, _ in fusion.best_per_file((vec, kw)[which], doc_of)]
    return fuse


FUSERS: dict[str, Fuser] = {
    "vector only": only(0), "keyword only": only(1),
    **{f"chunk RRF k={k}" + (" (before)" if k == 60 else ""): chunk_rrf(k)
       for k in (60, 20, 10)},
    **{f"file RRF k={k}": file_rrf(k) for k in (60, 30, 20, 10, 5, 2)},
    **{f"convex α={a}": convex(a) for a in (0.3, 0.5, 0.6, 0.7, 0.8)},
}


def example_query(page_text: str) -> str | None:
    for line in page_text.splitlines():
        if line.startswith("- "):
            return line[2:].rstrip(":： ").strip()
    return None


def evaluate(index: Index, queries: Sequence[tuple[str, str]],
             splits: bool = False) -> dict[str, dict[str, dict[str, float]]]:
    """queries: (query, wanted path) → {query set: {fusion: metrics}}, with even/odd halves."""
    store = index.store
    doc_id = {path: row[0] for path, row in store.documents().items()}
    texts = [q for q, _ in queries]
    vectors = index._query_vectors(texts)
    lists = [(vector_hits(store, v, FILE_POOL), keyword_hits(store, q, FILE_POOL))
             for q, v in zip(texts, vectors, strict=True)]
    doc_of = store.chunk_docs([c for vec, kw in lists for c, _ in vec + kw])
    ranks: dict[str, list[int | None]] = {}
    for name, fuse in FUSERS.items():
        ranks[name] = []
        for (vec, kw), (_, want) in zip(lists, queries, strict=True):
            files = fuse(vec, kw, doc_of)[:K]
            ranks[name].append(files.index(doc_id[want]) + 1 if doc_id[want] in files else None)
    hits = index.search_many(texts, k=K, mode="hybrid", group="file")
    ranks["library search(group=file)"] = [
        next((i + 1 for i, h in enumerate(found) if h.path == want), None)
        for found, (_, want) in zip(hits, queries, strict=True)]
    out = {"": {name: metrics(r) for name, r in ranks.items()}}
    if splits:
        out[", even pages"] = {name: metrics(r[0::2]) for name, r in ranks.items()}
        out[", odd pages"] = {name: metrics(r[1::2]) for name, r in ranks.items()}
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, default=ROOT / "models" / "all-minilm-l6-v2-f16.gguf")
    parser.add_argument("--corpus", type=Path, default=ROOT / "tests" / "data",
                        help="a folder with tldr-linux/ and tldr-cjk/ (default: tests/data)")
    parser.add_argument("--lang", action="append", choices=("en", "zh", "ja", "ko"))
    parser.add_argument("--count", type=int, default=None, help="first N pages (default: all)")
    parser.add_argument("--json", action="store_true")
    opts = parser.parse_args()
    engine = Engine(opts.model)
    report: dict[str, dict[str, dict[str, float]]] = {}
    for lang in opts.lang or ["en", "zh"]:
        with tempfile.TemporaryDirectory() as tmp:
            docs = Path(tmp) / "docs"
            docs.mkdir()
            desc = build_docs(opts.corpus, docs, opts.count, lang)
            with Index(Path(tmp) / "eval.db", engine) as index:
                index.add([docs])
                pairs = [(q, p) for p, q in desc.items()]
                for suffix, table in evaluate(index, pairs, splits=True).items():
                    report[f"{lang} desc{suffix}"] = table
                examples = [(q, p) for p in desc
                            if (q := example_query(Path(p).read_text(encoding="utf-8")))]
                report[f"{lang} example"] = evaluate(index, examples)[""]
                print(f"{lang}: done", file=sys.stderr, flush=True)
    if opts.json:
        print(json.dumps(report, indent=2))
        return
    sets = list(report)
    print(f"model: {opts.model.name}; MRR@10 / Recall@10 over files\n")
    print("| fusion | " + " | ".join(sets) + " |")
    print("| --- |" + " ---: |" * len(sets))
    for name in report[sets[0]]:
        cells = [f"{report[s][name]['mrr@10']:.3f} / {report[s][name]['recall@10']:.3f}"
                 for s in sets]
        print(f"| {name} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
