#!/usr/bin/env python3
"""What reranking adds to one search: 30 candidates (tldr pages' best windows) scored by a
reranker at the real layer shapes of Qwen3-Reranker-0.6B and bge-reranker-base (random
weights, Q8_0 like the catalog files; build them with
``python -m scripts.build_shape_models --rerankers``).

Peer, side by side in the same run: the same pairs scored one decode per pair (what a loop
over llama.cpp's rerank call does) against our packed decodes.

    python -m scripts.bench_rerank [--candidates 30] [--window 256] [--repeat 3]
"""

from __future__ import annotations

import argparse
import re
import statistics
import time
from pathlib import Path

from gguf_embed import Reranker
from gguf_embed.reranker import best_window

ROOT = Path(__file__).resolve().parent.parent

MODELS = {"bge-reranker-base shape (XLM-R)": "shape-xlmr-reranker-base-q8_0.gguf",
          "qwen3-reranker-0.6b shape": "shape-qwen3-reranker-0.6b-q8_0.gguf"}
QUERY = "compress a folder into an archive"
WORD = re.compile(r"\w+")


def passages(corpus: Path, n: int) -> list[str]:
    pages = sorted((corpus / "tldr-linux" / "pages").glob("*.md"))[:n]
    return [p.read_text(encoding="utf-8") for p in pages]


def timed(fn, repeat: int, warmup: bool = True) -> float:  # type: ignore[no-untyped-def]
    if warmup:
        fn()  # contexts created, caches hot
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", type=Path, default=ROOT / "models")
    parser.add_argument("--corpus", type=Path, default=ROOT / "tests" / "data",
                        help="holds tldr-linux/pages")
    parser.add_argument("--candidates", type=int, nargs="+", default=[10, 30])
    parser.add_argument("--window", type=int, nargs="+", default=[128, 256])
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--no-peer", action="store_true", help="skip one-pair-per-decode")
    parser.add_argument("--no-warmup", action="store_true", help="time the first call too")
    parser.add_argument("--only", default=None, help="run the models whose label has this")
    opts = parser.parse_args()
    docs = passages(opts.corpus, max(opts.candidates))
    terms = {w.lower() for w in WORD.findall(QUERY)}
    print("| model | candidates | window | tokens | packed (ours) | one pair per decode |")
    print("| --- | ---: | ---: | ---: | ---: | ---: |")
    for label, file in MODELS.items():
        if opts.only and opts.only not in label:
            continue
        path = opts.models / file
        if not path.exists():
            print(f"| {label} | missing {file} | | | | |")
            continue
        with Reranker(path, n_threads=opts.threads) as reranker:
            for n in opts.candidates:
                for window in opts.window:
                    texts = [best_window(d, terms, reranker.count_tokens, window, WORD)
                             for d in docs[:n]]
                    tokens = sum(len(reranker.pair_tokens(QUERY, t)[0]) for t in texts)
                    warm = not opts.no_warmup
                    packed = timed(lambda t=texts: reranker.score(QUERY, t), opts.repeat, warm)
                    single = "-" if opts.no_peer else "{:.2f} s".format(timed(
                        lambda t=texts: [reranker.score(QUERY, [x]) for x in t], opts.repeat,
                        warm))
                    print(f"| {label} | {n} | {window} | {tokens:,} | {packed:.2f} s "
                          f"| {single} |", flush=True)


if __name__ == "__main__":
    main()
