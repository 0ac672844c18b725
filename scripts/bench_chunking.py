#!/usr/bin/env python3
"""Chunking one very long line (minified JS/JSON/CSV) with the model's own tokenizer: the split
before issue 9 (re-tokenizes the rest of the line for every piece) against today's (a window
a little longer than one piece), and the same text with newlines as the reference.

    python -m scripts.bench_chunking                    # MiniLM F16 tokenizer, 0.8 and 20 MB
    python -m scripts.bench_chunking --model models/tiny-qwen3-f32.gguf --old-mb 0.2
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable
from pathlib import Path

from gguf_embed import Engine, chunking
from gguf_embed.chunking import ChunkSettings, chunk
from gguf_embed.extract import Extracted

ROOT = Path(__file__).resolve().parent.parent


def old_split_long(text: str, count: Callable[[str], int], budget: int) -> list[str]:
    """The split as it was before issue 9, for the side-by-side row."""
    out: list[str] = []
    rest = text
    while rest:
        if count(rest) <= budget:
            out.append(rest)
            break
        lo, hi = 1, len(rest)
        while lo < hi:
            mid = (lo + hi + 1) // 2
            if count(rest[:mid]) <= budget:
                lo = mid
            else:
                hi = mid - 1
        cut = rest.rfind(" ", 0, lo)
        cut = cut if cut > lo // 2 else lo
        out.append(rest[:cut])
        rest = rest[cut:].lstrip(" ")
    return out


def minified(n_bytes: int, newlines: bool) -> str:
    parts, size, i = [], 0, 0
    while size < n_bytes:
        part = f'function f{i}(a,b){{return a*{i}+b["k{i % 97}"];}}var v{i}=f{i}(1,{{k:{i}}});'
        parts.append(part + ("\n" if newlines else ""))
        size += len(part) + newlines
        i += 1
    return "".join(parts)[:n_bytes]


def run(text: str, count: Callable[[str], int], settings: ChunkSettings,
        old: bool) -> tuple[float, int]:
    saved = chunking._split_long, chunking.LONG_LINE_CHARS_PER_TOKEN
    if old:  # the old code counted the whole line first, then split it
        chunking._split_long, chunking.LONG_LINE_CHARS_PER_TOKEN = old_split_long, 10**12
    try:
        lines = text.split("\n")
        doc = Extracted(text=text, lines=list(range(1, len(lines) + 1)), lines_text=lines)
        start = time.perf_counter()
        made = chunk(doc, count, settings)
        return time.perf_counter() - start, len(made)
    finally:
        chunking._split_long, chunking.LONG_LINE_CHARS_PER_TOKEN = saved


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, default=ROOT / "models" / "all-minilm-l6-v2-f16.gguf")
    parser.add_argument("--old-mb", type=float, default=0.8, help="size for the old split")
    parser.add_argument("--mb", type=float, default=20.0, help="size for today's split")
    opts = parser.parse_args()
    engine = Engine(opts.model)
    settings = ChunkSettings.for_context(engine.max_tokens)

    def count(text: str) -> int:  # what the indexer counts with
        return len(engine.tokenize(engine.spec.format_document(text)))

    print(f"model tokenizer: {opts.model.name}, chunks of {settings.max_tokens} tokens, "
          f"synthetic minified JS\n")
    print("| input | split | seconds | chunks | MB/s |")
    print("| --- | --- | ---: | ---: | ---: |")
    for mb, old in ((opts.old_mb, True), (opts.old_mb, False), (opts.mb, False)):
        for newlines in ((False, True) if not old else (False,)):
            text = minified(int(mb * 1e6), newlines)
            seconds, n = run(text, count, settings, old)
            shape = "with newlines" if newlines else "one line"
            label = "before issue 9" if old else "today"
            print(f"| {mb:g} MB {shape} | {label} | {seconds:.2f} | {n:,} | "
                  f"{mb / seconds:.2f} |", flush=True)


if __name__ == "__main__":
    main()
