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
Models come from scripts/build_shape_models.py. Peak GPU memory is read with nvidia-smi when
there is one (the most the GPU held during the run, less what it held before).

    python scripts/bench_sizes.py --sizes short medium           # CPU, 0.6B shape, Q8_0
    python scripts/bench_sizes.py --gguf models/shape-qwen3-0.6b-f16.gguf --no-transformers
    python scripts/bench_sizes.py --impls engine llama.cpp \
        --llama-bin "$(python scripts/build_llama_tools.py)"
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
IMPLS = ["engine", "stock-defaults", "stock-context", "transformers", "llama.cpp"]
# tokens, inputs; 8k: long-path rate in minutes rather than the 30k row's quarter hour
SIZES = {"short": (128, 64), "medium": (2048, 8), "8k": (8192, 1), "long": (30_000, 1)}

CHILD = r"""
import json, re, resource, shutil, subprocess, sys, tempfile, threading, time
from pathlib import Path
sys.path.insert(0, {root!r})
impl, gguf, hf_dir, target, count, corpus, llama_bin = {args!r}
from gguf_embed import Engine
from gguf_embed._llama import physical_cores

def gpu_used():
    if not shutil.which("nvidia-smi"):
        return None
    out = subprocess.run(["nvidia-smi", "--query-gpu=memory.used", "--format=csv,noheader,nounits"],
                         capture_output=True, text=True).stdout.split()
    return float(out[0]) if out else None

gpu_base, gpu_peak, running = gpu_used(), [0.0], [True]
def watch():
    while running[0]:
        gpu_peak[0] = max(gpu_peak[0], gpu_used() or 0.0)
        time.sleep(0.1)
if gpu_base is not None:
    threading.Thread(target=watch, daemon=True).start()

counter = Engine(gguf)
words = []
for page in sorted(Path(corpus, "tldr-linux", "pages").glob("*.md")):
    words.extend(page.read_text().split())
texts, start = [], 0
for i in range(count):
    lo, hi = 1, 4 * target
    while lo < hi:
        mid = (lo + hi + 1) // 2
        if len(counter.tokenize(" ".join(words[start:start + mid]))) <= target:
            lo = mid
        else:
            hi = mid - 1
    texts.append(" ".join(words[start:start + lo]))
    start += lo
tokens = sum(len(counter.tokenize(t)) for t in texts)
flash = "on" if target <= 512 or counter.long_flash_attn(target + 64) else "off"  # as ours
eos = counter.spec.eos_token if counter.spec.eos else ""  # the token ours appends, as text
counter.close()
if impl == "engine":
    engine = Engine(gguf)
    run = lambda batch: engine.embed(batch)
elif impl.startswith("stock"):
    from llama_cpp import Llama
    # one ubatch for the whole input up to medium; at 30k tokens that would need a 57 GB
    # attention matrix without flash attention, so long inputs go in 512-token ubatches
    kwargs = {{}} if impl == "stock-defaults" else {{
        "n_ctx": target + 64, "n_batch": target + 64,
        "n_ubatch": target + 64 if target <= 4096 else 512}}
    llm = Llama(gguf, embedding=True, verbose=False, **kwargs)
    run = lambda batch: llm.embed(batch)
elif impl == "transformers":
    import torch
    from transformers import AutoTokenizer, Qwen3Model
    torch.set_num_threads(counter.n_threads if hasattr(counter, "n_threads") else 2)
    tok = AutoTokenizer.from_pretrained(hf_dir)
    model = Qwen3Model.from_pretrained(hf_dir, dtype=torch.float32,
                                       attn_implementation="sdpa").eval()
    eos = tok.convert_tokens_to_ids("<|endoftext|>")
    def run(batch):
        with torch.no_grad():
            for t in batch:
                ids = tok(t, add_special_tokens=False)["input_ids"] + [eos]
                model(torch.tensor([ids])).last_hidden_state[0, -1]
if impl == "llama.cpp":
    # wall time of the whole tool, less that of the same command on one short text: loading,
    # warm-up and context set-up cancel (its own perf log is written by a thread that can
    # lose its last lines at exit, so it is not read)
    pack = 512 if target <= 512 else target + 64
    def embed_file(lines):
        with tempfile.NamedTemporaryFile("w", suffix=".txt", delete=False) as f:
            f.write("\n".join(lines))
        t0 = time.perf_counter()
        proc = subprocess.run(
            [str(Path(llama_bin, "llama-embedding")), "-m", gguf, "-f", f.name, "-c", str(pack),
             "-b", str(pack), "-ub", "512", "--attention", "causal", "--pooling", "last",
             "-fa", flash, "-t", str(physical_cores()), "-ngl", "999", "--embd-normalize", "2",
             "--embd-output-format", "array"], capture_output=True, text=True)
        Path(f.name).unlink()
        if proc.returncode:
            sys.exit("llama-embedding failed: " + (proc.stderr.strip().splitlines() or ["?"])[-1])
        return time.perf_counter() - t0
    base = min(embed_file(["warm up"]) for _ in range(2))
    seconds = embed_file([t + eos for t in texts]) - base
    peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
else:
    run([" ".join(t.split()[:200]) for t in texts[:2]])  # warm-up, short: a long one takes minutes
    t0 = time.perf_counter(); run(texts); seconds = time.perf_counter() - t0
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
running[0] = False
gpu = gpu_peak[0] - gpu_base if gpu_base is not None else None
print(json.dumps({{"tokens": tokens, "seconds": seconds, "peak_mb": peak, "gpu_mb": gpu}}))
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--gguf", type=Path, default=ROOT / "models" / "shape-qwen3-0.6b-q8_0.gguf")
    parser.add_argument("--hf-dir", type=Path, default=ROOT / "models" / "shape-qwen3-0.6b")
    parser.add_argument("--corpus", type=Path, default=ROOT.parent / "shared" / "corpora")
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
            code = CHILD.format(root=str(ROOT), args=(impl, str(opts.gguf), str(opts.hf_dir),
                                                      target, count, str(opts.corpus),
                                                      str(opts.llama_bin or "")))
            proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
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
