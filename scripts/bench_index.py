#!/usr/bin/env python3
"""Pipeline overhead: `Index.add` end to end (walk, hash, extract, chunk, embed, write) against
the engine alone embedding exactly the same chunk texts, in one run, same model and threads.

    python -m scripts.bench_index --corpus ../shared/corpora   # 600 tldr pages + 2 R PDFs
    python -m scripts.bench_index                  # from tests/data: the pages and the R FAQ
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
import time
from pathlib import Path

from gguf_embed import Engine
from gguf_embed.index import Index

ROOT = Path(__file__).resolve().parent.parent


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, default=ROOT / "models" / "all-minilm-l6-v2-f16.gguf")
    parser.add_argument("--corpus", type=Path, default=ROOT / "tests" / "data")
    parser.add_argument("--pages", type=int, default=600)
    opts = parser.parse_args()
    engine = Engine(opts.model)
    with tempfile.TemporaryDirectory() as tmp:
        docs = Path(tmp) / "docs"
        docs.mkdir()
        for page in sorted((opts.corpus / "tldr-linux" / "pages").glob("*.md"))[:opts.pages]:
            shutil.copy(page, docs / page.name)
        pdfs = [p for p in (opts.corpus / "pdf" / n for n in ("R-FAQ.pdf", "R-data.pdf"))
                if p.exists()]
        for pdf in pdfs:
            shutil.copy(pdf, docs / pdf.name)
        engine.embed(["warm up"])
        start = time.perf_counter()
        with Index(Path(tmp) / "bench.db", engine) as index:
            summary = index.add([docs])
            texts = [row[0] for row in index.store.conn.execute(
                "SELECT text FROM chunks ORDER BY id")]
        index_seconds = time.perf_counter() - start
    tokens = summary.tokens_embedded
    start = time.perf_counter()
    engine.encode(texts)
    engine_seconds = time.perf_counter() - start
    index_rate, engine_rate = tokens / index_seconds, tokens / engine_seconds
    print(f"model: {opts.model.name}, {opts.pages} tldr pages + {len(pdfs)} PDFs, "
          f"{summary.chunks} chunks, "
          f"{tokens:,} tokens, {engine.n_threads} threads\n")
    print("| run | seconds | tokens/s |")
    print("| --- | ---: | ---: |")
    print(f"| engine alone (same chunk texts) | {engine_seconds:.1f} | {engine_rate:,.0f} |")
    print(f"| gguf-embed index, end to end | {index_seconds:.1f} | {index_rate:,.0f} |")
    print(f"\npipeline overhead: {(1 - index_rate / engine_rate) * 100:.1f}%")


if __name__ == "__main__":
    main()
