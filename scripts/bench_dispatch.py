#!/usr/bin/env python3
"""Engine tokens/s under two llama-cpp-python builds, side by side: each build is a Python
(a virtualenv) running the same engine on the same texts in a subprocess, interleaved
A B A B so that a drifting host load hits both alike.

    python -m scripts.bench_dispatch --peer cpu=.venv/bin/python \\
        --peer cpu-dispatch=/work/venv-dispatch/bin/python --rounds 2

Prints a Markdown table: tokens/s (model tokens per wall second, best of each run's repeats;
the runs listed), tokens per CPU-second of the process (less sensitive to other load on the
host), the CPU kernels each build loaded, and the fraction of the peak FP32 rate, from
``--peak-gflops`` (one core) or else 2 FMA pipes × 8 lanes × 2 FLOP (AVX2) per cycle per core
at ``/proc/cpuinfo``'s nominal clock: the wall rate against all threads' cores, the CPU-time
rate against one core. FLOPs per token count the matmul weights in the layers
(2 per weight) plus the attention scores and sums of each text's own tokens.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_MODELS = [("all-minilm-l6-v2-f16.gguf", 200), ("shape-qwen3-0.6b-q4_k_m.gguf", 24),
                  ("shape-qwen3-0.6b-f16.gguf", 24)]
BIDIRECTIONAL = {"bert", "nomic-bert", "jina-bert-v2", "modern-bert", "neo-bert"}


def child(model: Path, count: int, repeat: int, corpus: Path, threads: int | None) -> None:
    """One build's run: load the engine, embed the texts, print a JSON line."""
    from gguf_embed import Engine, _llama

    from .bench_engine import load_texts

    with Engine(model, n_threads=threads) as engine:
        texts = load_texts(corpus, count, engine, min(engine.max_tokens, 512))
        lengths = engine.count_tokens(texts)
        engine.embed(texts[:4])  # warm-up
        best, best_cpu = float("inf"), float("inf")
        for _ in range(repeat):
            start, start_cpu = time.perf_counter(), time.process_time()
            engine.embed(texts)
            best = min(best, time.perf_counter() - start)
            best_cpu = min(best_cpu, time.process_time() - start_cpu)
        cpu = _llama.cpu_backend()
        print(json.dumps({"variant": cpu["variant"], "features": cpu["features"],
                          "threads": engine.n_threads, "lengths": list(lengths),
                          "seconds": best, "cpu_seconds": best_cpu}))


def flops_per_token(model: Path, lengths: list[int]) -> float:
    """2 × matmul weights in the layers + attention (QKᵀ and AV) over each text's tokens."""
    from gguf import GGUFReader

    reader = GGUFReader(model)

    def field(key: str) -> int | None:
        f = reader.fields.get(key)
        return int(f.parts[f.data[0]][0]) if f is not None else None

    arch = bytes(reader.fields["general.architecture"].parts[-1]).decode()
    weights = sum(int(t.n_elements) for t in reader.tensors
                  if t.name.startswith("blk.") and len(t.shape) >= 2)
    n_layer = field(f"{arch}.block_count") or 0
    n_head = field(f"{arch}.attention.head_count") or 0
    head_dim = field(f"{arch}.attention.key_length") or \
        (field(f"{arch}.embedding_length") or 0) // max(n_head, 1)
    d_attn = n_head * head_dim
    if arch in BIDIRECTIONAL:
        pairs = sum(n * n for n in lengths)
    else:  # causal: token i attends to i + 1 tokens
        pairs = sum(n * (n + 1) // 2 for n in lengths)
    attention = 4 * d_attn * n_layer * pairs  # 2 FLOP per multiply-add, QKᵀ and AV
    return 2 * weights + attention / sum(lengths)


def nominal_peak_gflops(cores: int) -> tuple[float, str]:
    mhz = 0.0
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("cpu MHz"):
                mhz = float(line.split(":")[1])
                break
    except OSError:
        pass
    peak = cores * mhz / 1000 * 32
    return peak, (f"{cores} × {mhz / 1000:.2f} GHz (nominal) × 32 FP32 FLOP/cycle "
                  f"= {peak:.1f} GFLOP/s")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--peer", action="append", default=[], metavar="LABEL=PYTHON",
                        help="a build to compare: label and its python (twice or more)")
    parser.add_argument("--model", action="append", default=[], metavar="FILE[:COUNT]",
                        help="GGUF under models/ (or a path) and how many texts")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--repeat", type=int, default=2)
    parser.add_argument("--corpus", type=Path, default=ROOT / "tests" / "data")
    parser.add_argument("--threads", type=int, default=None,
                        help="engine threads (default: physical cores); 1 makes the CPU-time "
                             "rate nearly immune to other load on the host")
    parser.add_argument("--peak-gflops", type=float, default=None,
                        help="peak GFLOP/s of one core (default: from /proc/cpuinfo)")
    parser.add_argument("--child", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--count", type=int, default=100, help=argparse.SUPPRESS)
    opts = parser.parse_args()
    if opts.child:
        child(opts.child, opts.count, opts.repeat, opts.corpus, opts.threads)
        return

    peers = [tuple(p.split("=", 1)) for p in opts.peer] or [("this python", sys.executable)]
    models = [(m.split(":")[0], int(m.split(":")[1]) if ":" in m else 100) for m in opts.model] \
        or DEFAULT_MODELS
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    rows: list[dict[str, Any]] = []
    for name, count in models:
        path = Path(name) if Path(name).exists() else ROOT / "models" / name
        runs: dict[str, list[dict[str, Any]]] = {label: [] for label, _ in peers}
        for r in range(opts.rounds):
            order = peers if r % 2 == 0 else peers[::-1]  # A B, then B A
            for label, python in order:
                out = subprocess.run(
                    [python, "-m", "scripts.bench_dispatch", "--child", str(path), "--count",
                     str(count), "--repeat", str(opts.repeat), "--corpus", str(opts.corpus),
                     *(["--threads", str(opts.threads)] if opts.threads else [])],
                    cwd=ROOT, env=env, capture_output=True, text=True, check=True)
                result = json.loads(out.stdout.strip().splitlines()[-1])
                result["rate"] = sum(result["lengths"]) / result["seconds"]
                result["cpu_rate"] = sum(result["lengths"]) / result["cpu_seconds"]
                runs[label].append(result)
                print(f"  {path.name} {label} [{result['variant']}]: {result['rate']:,.0f} "
                      f"tokens/s, {result['cpu_rate']:,.0f} tokens/CPU-s", file=sys.stderr,
                      flush=True)
        for label, _ in peers:
            first = runs[label][0]
            flops = flops_per_token(path, first["lengths"])
            core_peak, how = (opts.peak_gflops, "given") if opts.peak_gflops else \
                nominal_peak_gflops(1)
            best = max(r["rate"] for r in runs[label])
            best_cpu = max(r["cpu_rate"] for r in runs[label])
            rows.append({"model": path.name, "build": label, "variant": first["variant"],
                         "rates": [r["rate"] for r in runs[label]], "best": best,
                         "best_cpu": best_cpu, "threads": first["threads"],
                         "tokens": sum(first["lengths"]), "texts": len(first["lengths"]),
                         "gflop_per_token": flops / 1e9,
                         # wall rate against all threads' peak; CPU-time rate against one core's
                         "peak_wall": best * flops / 1e9 / (core_peak * first["threads"])
                         if core_peak else None,
                         "peak_cpu": best_cpu * flops / 1e9 / core_peak if core_peak else None,
                         "peak": how})
    print(f"peak of one core: {rows[0]['peak']}; threads: {rows[0]['threads']}\n")
    print("| model | build | CPU kernels | tokens/s, runs in order | best tokens/s "
          "| best tokens/CPU-s | GFLOP/token | % of peak (wall) | % of peak (CPU time) |")
    print("| --- | --- | --- | --- | ---: | ---: | ---: | ---: | ---: |")
    for row in rows:
        rates = ", ".join(f"{r:,.0f}" for r in row["rates"])
        wall = f"{100 * row['peak_wall']:.1f} %" if row["peak_wall"] else "—"
        cpu = f"{100 * row['peak_cpu']:.1f} %" if row["peak_cpu"] else "—"
        print(f"| {row['model']} ({row['texts']} texts, {row['tokens']} tokens) | {row['build']} "
              f"| {row['variant']} | {rates} | {row['best']:,.0f} | {row['best_cpu']:,.0f} | "
              f"{row['gflop_per_token']:.3f} | {wall} | {cpu} |")


if __name__ == "__main__":
    main()
