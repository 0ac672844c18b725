"""Retrieval eval on the tldr pages: MRR@10 and Recall@10 for vector, keyword and hybrid search,
and an exact numpy search over the same stored vectors. tests/test_eval.py runs it on a subset.

Each page's first `> ` line is the query; the page without its `> ` block is the document.

    python -m tests.support.eval                             # all-MiniLM-L6-v2, all 2,030 pages
    python -m tests.support.eval --model models/tiny-qwen3-f32.gguf --count 300
    python -m tests.support.eval --corpus CORPORA --lang zh   # CORPORA: tldr-linux/ and tldr-cjk/

Search returns one row per file (the default), so the metrics are over files.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from gguf_embed import Engine
from gguf_embed.index import Index
from gguf_embed.search import search

ROOT = Path(__file__).resolve().parent.parent.parent

K = 10


LANGS = ("en", "zh", "ja", "ko")


def corpus_pages(corpus: Path, lang: str = "en") -> list[Path]:
    """The tldr pages of one language: English from tldr-linux, the others from tldr-cjk."""
    if lang == "en":
        return sorted((corpus / "tldr-linux" / "pages").glob("*.md"))
    return sorted((corpus / "tldr-cjk" / f"pages.{lang}").glob("*/*.md"))


def build_docs(corpus: Path, out: Path, count: int | None, lang: str = "en") -> dict[str, str]:
    """Write the pages without their `> ` block; return path → query."""
    queries: dict[str, str] = {}
    pages = corpus_pages(corpus, lang)
    for page in pages[:count] if count else pages:
        lines = page.read_text(encoding="utf-8").splitlines()
        quoted = [ln for ln in lines if ln.startswith(">")]
        if not quoted:
            continue
        query = quoted[0].lstrip("> ").strip()
        body = "\n".join(ln for ln in lines if not ln.startswith(">")).strip()
        # CJK pages come from several platform folders that share command names
        target = out / (page.name if lang == "en" else f"{page.parent.name}-{page.name}")
        target.write_text(body + "\n", encoding="utf-8")
        queries[str(target)] = query
    return queries


def ranks_from_chunks(hits: list[list[str]], truth: list[str]) -> list[int | None]:
    out: list[int | None] = []
    for paths, want in zip(hits, truth, strict=True):
        docs = list(dict.fromkeys(paths))[:K]
        out.append(docs.index(want) + 1 if want in docs else None)
    return out


def metrics(ranks: list[int | None]) -> dict[str, float]:
    mrr = float(np.mean([1.0 / r if r else 0.0 for r in ranks]))
    recall = float(np.mean([1.0 if r else 0.0 for r in ranks]))
    return {"mrr@10": round(mrr, 4), "recall@10": round(recall, 4)}


def exact_numpy(index: Index, qvecs: np.ndarray) -> list[list[str]]:
    conn = index.store.conn
    ids, paths = zip(*conn.execute("SELECT c.id, d.path FROM chunks c JOIN documents d "
                                   "ON d.id = c.doc_id ORDER BY c.id"), strict=True)
    found, matrix = index.store.vectors(list(ids))
    by_id = dict(zip(ids, paths, strict=True))
    chunk_paths = [by_id[i] for i in found]
    sims = qvecs @ matrix.T
    out = []
    for row in sims:
        order = np.argsort(-row)[: K * 5]
        out.append([chunk_paths[i] for i in order])
    return out


def evaluate(engine: Engine, corpus: Path, count: int | None = None,
             lang: str = "en") -> dict[str, Any]:
    """Index the first ``count`` tldr pages under ``corpus`` and score every search mode."""
    with tempfile.TemporaryDirectory() as tmp:
        docs = Path(tmp) / "docs"
        docs.mkdir()
        queries = build_docs(corpus, docs, count, lang)
        truth = list(queries)
        qtexts = [queries[p] for p in truth]
        start = time.perf_counter()
        with Index(Path(tmp) / "eval.db", engine) as index:
            summary = index.add([docs])
            build = time.perf_counter() - start
            results: dict[str, dict[str, float]] = {}
            for mode in ("vector", "keyword", "hybrid"):
                hits = index.search_many(qtexts, k=K, mode=mode)
                results[mode] = metrics(ranks_from_chunks([[h.path for h in r] for r in hits],
                                                          truth))
            qvecs = index._query_vectors(qtexts)
            coarse = [[h.path for h in search(index.store, v, q, k=K * 3, mode="vector",
                                              exact=False)] for q, v in zip(qtexts, qvecs,
                                                                           strict=True)]
            results["vector, coarse bits + rescore (forced)"] = metrics(
                ranks_from_chunks(coarse, truth))
            results["exact numpy (vector)"] = metrics(ranks_from_chunks(
                exact_numpy(index, qvecs), truth))
    return {"documents": len(truth), "chunks": summary.chunks,
            "index_seconds": round(build, 1), "results": results}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, default=ROOT / "models" / "all-minilm-l6-v2-f16.gguf")
    parser.add_argument("--corpus", type=Path, default=ROOT / "tests" / "data",
                        help="holds tldr-linux/pages (default: the copy in tests/data)")
    parser.add_argument("--count", type=int, default=None, help="first N pages (default: all)")
    parser.add_argument("--lang", choices=LANGS, default="en",
                        help="en: tldr-linux; zh, ja, ko: tldr-cjk")
    parser.add_argument("--json", action="store_true")
    opts = parser.parse_args()
    with Engine(opts.model) as engine:
        report = {"model": opts.model.name, **evaluate(engine, opts.corpus, opts.count,
                                                             opts.lang)}
    if opts.json:
        print(json.dumps(report, indent=2))
        return
    print(f"model: {opts.model.name}, {report['documents']} tldr pages, {report['chunks']} "
          f"chunks, indexed in {report['index_seconds']:.1f} s\n")
    print("| search | MRR@10 | Recall@10 |")
    print("| --- | ---: | ---: |")
    for mode, m in report["results"].items():
        print(f"| {mode} | {m['mrr@10']:.4f} | {m['recall@10']:.4f} |")


if __name__ == "__main__":
    main()
