#!/usr/bin/env python3
"""Throughput and peak memory at real model sizes, one implementation per fresh process:

  * gguf-embed Engine
  * stock llama-cpp-python ``Llama.embed`` (defaults, plus a context large enough for the input:
    with defaults it silently cuts every input to 512 tokens)
  * transformers fp32 (the same random weights, SDPA attention, last-token pooling)
  * llama.cpp itself: its `llama-embedding` tool built from the same source and preset
    (scripts/build_llama_tools.py), given the same texts, packed the same way (n_batch = pack
    size, 512-token ubatches, flash attention where the engine uses it, causal, last-token
    pooling); its time is the tool's wall time less that of the same command on one short
    text, which leaves out loading and warm-up as for the others

on short (~128 tokens), medium (~2k) and long (~30k) inputs made from the tldr pages.
Each measurement is scripts/bench_sizes_child.py in a fresh process.
Models come from scripts/build_shape_models.py. Peak GPU memory is read with nvidia-smi when
there is one (the most the GPU held during the run, less what it held before).

    python -m scripts.bench_sizes --sizes short medium           # CPU, 0.6B shape, Q8_0
    python -m scripts.bench_sizes --gguf models/shape-qwen3-0.6b-f16.gguf --no-transformers
    python -m scripts.bench_sizes --impls engine llama.cpp \
        --llama-bin "$(python -m scripts.build_llama_tools)"
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
IMPLS = ["engine", "stock-defaults", "stock-context", "transformers", "llama.cpp"]
# tokens, inputs; 8k: long-path rate in minutes rather than the 30k row's quarter hour
SIZES = {"short": (128, 64), "medium": (2048, 8), "8k": (8192, 1), "long": (30_000, 1)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--gguf", type=Path, default=ROOT / "models" / "shape-qwen3-0.6b-q8_0.gguf")
    parser.add_argument("--hf-dir", type=Path, default=ROOT / "models" / "shape-qwen3-0.6b")
    parser.add_argument("--corpus", type=Path, default=ROOT / "tests" / "data",
                        help="holds tldr-linux/pages (the text the inputs are cut from)")
    parser.add_argument("--sizes", nargs="+", choices=sorted(SIZES), default=["short", "medium"])
    parser.add_argument("--no-transformers", action="store_true")
    parser.add_argument("--impls", nargs="+", choices=IMPLS, default=IMPLS[:4])
    parser.add_argument("--llama-bin", type=Path, help="folder with llama.cpp's llama-embedding")
    opts = parser.parse_args()
    impls = [i for i in opts.impls if not (opts.no_transformers and i == "transformers")]
    if "llama.cpp" in impls and not opts.llama_bin:
        parser.error("llama.cpp needs --llama-bin (see scripts/build_llama_tools.py)")
    print(f"model: {opts.gguf.name} (random weights, real layer shapes)\n")
    print("| input | implementation | tokens/s | peak RSS MB | peak GPU MB | note |")
    print("| --- | --- | ---: | ---: | ---: | --- |")
    for size in opts.sizes:
        target, count = SIZES[size]
        for impl in impls:
            proc = subprocess.run(
                [sys.executable, "-m", "scripts.bench_sizes_child", impl, str(opts.gguf),
                 str(opts.hf_dir), str(target), str(count), str(opts.corpus),
                 str(opts.llama_bin or "")], capture_output=True, text=True, cwd=ROOT)
            if proc.returncode != 0:
                print(f"| {size} ({target} × {count}) | {impl} | failed | | | "
                      f"{proc.stderr.strip().splitlines()[-1][:80] if proc.stderr else ''} |")
                continue
            r = json.loads(proc.stdout.strip().splitlines()[-1])
            note = "cuts inputs to 512 tokens" if impl == "stock-defaults" and target > 512 \
                else ""
            gpu = f"{r['gpu_mb']:,.0f}" if r["gpu_mb"] is not None else "–"
            print(f"| {size} ({target} × {count}) | {impl} | {r['tokens'] / r['seconds']:,.0f} | "
                  f"{r['peak_mb']:,.0f} | {gpu} | {note} |", flush=True)


if __name__ == "__main__":
    main()
