#!/usr/bin/env python3
"""Engine tokens/s under two llama-cpp-python builds, side by side: each build is a Python
(a virtualenv) running the same engine on the same texts in a subprocess, interleaved
A B A B so that a drifting host load hits both alike.

    python -m scripts.bench_dispatch --peer cpu=.venv/bin/python \\
        --peer cpu-dispatch=/work/venv-dispatch/bin/python --rounds 2

Prints a Markdown table: tokens/s (model tokens per wall second, best of each run's repeats;
the runs listed), tokens per CPU-second of the process (less sensitive to other load on the
host), the CPU kernels each build loaded, and the fraction of the peak rate of the kernel the
weights run on (FP32 FMA for F32/F16, BF16 dot products, int8 dot products: PEAK_PER_CYCLE),
from ``--peak-gflops`` (one core) or else at ``/proc/cpuinfo``'s nominal clock: the wall rate
against all threads' cores, the CPU-time rate against one core. FLOPs per token count the
matmul weights in the layers (2 per weight) plus the attention scores and sums of each text's
own tokens.
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


def nominal_ghz() -> float:
    """/proc/cpuinfo's clock (the nominal one under a hypervisor; boost is higher)."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("cpu MHz"):
                return float(line.split(":")[1]) / 1000
    except OSError:
        pass
    return 0.0


# Per core and cycle, for the kernels ggml runs on x86 (two vector pipes that can multiply-add,
# as on Intel since Haswell and AMD since Zen 2; Zen 5 and Xeon run 512-bit ops at full width,
# Zen 4 splits them in two, so use --peak-gflops there):
#   f32-fma   FP32 fused multiply-add (F32 and F16 weights: ggml widens F16 to FP32):
#             2 pipes × lanes (8 AVX2, 16 AVX-512) × 2 FLOP            = 32 / 64
#   bf16-dot  vdpbf16ps (BF16 weights with AVX512_BF16): 2 pipes × 16 lanes × 2 products
#             × 2 FLOP                                                 = 128
#   int8-dot  quantized weights (Q8_0, Q4_K, ...) against int8 activations, 256-bit dot
#             products (vpmaddubsw, or vpdpbusd with VNNI): 2 pipes × 32 int8 products
#             × 2 ops                                                  = 128
#             (ggml's 512-bit int8 paths would double it; the Q4_K/Q8_0 dot kernels it
#             runs on x86 are 256-bit)
PEAK_PER_CYCLE = {("f32-fma", False): 32, ("f32-fma", True): 64, ("bf16-dot", True): 128,
                  ("int8-dot", False): 128, ("int8-dot", True): 128}
FILE_TYPE_KERNEL = {0: "f32-fma", 1: "f32-fma", 32: "bf16-dot"}  # general.file_type; else int8


def kernel_for(model: Path, features: list[str]) -> tuple[str, bool]:
    """The matmul kernel family the model's weights run on, and whether AVX-512 is in use."""
    from gguf import GGUFReader

    field = GGUFReader(model).fields.get("general.file_type")
    file_type = int(field.parts[field.data[0]][0]) if field is not None else 1
    kernel = FILE_TYPE_KERNEL.get(file_type, "int8-dot")
    wide = "AVX512" in features
    if kernel == "bf16-dot" and "AVX512_BF16" not in features:
        kernel = "f32-fma"  # without the instruction, BF16 is widened to FP32
    return kernel, wide


def peak_gflops(cores: int, kernel: str, wide: bool, ghz: float | None = None
                ) -> tuple[float, str]:
    """Peak GOP/s of ``cores`` cores for ``kernel`` (see PEAK_PER_CYCLE) and the formula."""
    ghz = ghz or nominal_ghz()
    per_cycle = PEAK_PER_CYCLE[(kernel, wide)]
    peak = cores * ghz * per_cycle
    width = "AVX-512" if wide else "256-bit"
    return peak, (f"{kernel} ({width}): {cores} core(s) × {ghz:.2f} GHz (nominal) × "
                  f"{per_cycle} per cycle = {peak:.1f} GFLOP/s")


def nominal_peak_gflops(cores: int) -> tuple[float, str]:
    """The AVX2 FP32 peak (this script's historical yardstick)."""
    return peak_gflops(cores, "f32-fma", False)


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
                peak_gflops(1, *kernel_for(path, first["features"]))
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
    for peak in dict.fromkeys(row["peak"] for row in rows):
        print(f"peak of one core: {peak}")
    print(f"threads: {rows[0]['threads']}\n")
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
