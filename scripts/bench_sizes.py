#!/usr/bin/env python3
"""Throughput and peak memory at real model sizes, one implementation per fresh process:

  * gguf-embed Engine
  * stock llama-cpp-python ``Llama.embed`` (defaults, plus a context large enough for the input:
    with defaults it silently cuts every input to 512 tokens)
  * transformers fp32 (the same random weights, SDPA attention, last-token pooling)

on short (~128 tokens), medium (~2k) and long (~30k) inputs made from the tldr pages.
Models come from scripts/build_shape_models.py.

    python scripts/bench_sizes.py --sizes short medium           # CPU, 0.6B shape, Q8_0
    python scripts/bench_sizes.py --gguf models/shape-qwen3-0.6b-f16.gguf --no-transformers
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SIZES = {"short": (128, 64), "medium": (2048, 8), "long": (30_000, 1)}  # tokens, inputs

CHILD = r"""
import json, resource, sys, time
from pathlib import Path
sys.path.insert(0, {root!r})
impl, gguf, hf_dir, target, count, corpus = {args!r}
from gguf_embed import Engine
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
counter.close()
if impl == "engine":
    engine = Engine(gguf)
    run = lambda: engine.embed(texts)
elif impl.startswith("stock"):
    from llama_cpp import Llama
    kwargs = {{}} if impl == "stock-defaults" else {{"n_ctx": target + 64, "n_batch": target + 64,
                                                    "n_ubatch": target + 64}}
    llm = Llama(gguf, embedding=True, verbose=False, **kwargs)
    run = lambda: llm.embed(texts)
else:
    import torch
    from transformers import AutoTokenizer, Qwen3Model
    torch.set_num_threads(counter.n_threads if hasattr(counter, "n_threads") else 2)
    tok = AutoTokenizer.from_pretrained(hf_dir)
    model = Qwen3Model.from_pretrained(hf_dir, dtype=torch.float32,
                                       attn_implementation="sdpa").eval()
    eos = tok.convert_tokens_to_ids("<|endoftext|>")
    def run():
        with torch.no_grad():
            for t in texts:
                ids = tok(t, add_special_tokens=False)["input_ids"] + [eos]
                model(torch.tensor([ids])).last_hidden_state[0, -1]
run()  # warm-up
t0 = time.perf_counter(); run(); seconds = time.perf_counter() - t0
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
print(json.dumps({{"tokens": tokens, "seconds": seconds, "peak_mb": peak}}))
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--gguf", type=Path, default=ROOT / "models" / "shape-qwen3-0.6b-q8_0.gguf")
    parser.add_argument("--hf-dir", type=Path, default=ROOT / "models" / "shape-qwen3-0.6b")
    parser.add_argument("--corpus", type=Path, default=ROOT.parent / "shared" / "corpora")
    parser.add_argument("--sizes", nargs="+", choices=sorted(SIZES), default=["short", "medium"])
    parser.add_argument("--no-transformers", action="store_true")
    opts = parser.parse_args()
    impls = ["engine", "stock-defaults", "stock-context"] + (
        [] if opts.no_transformers else ["transformers"])
    print(f"model: {opts.gguf.name} (random weights, real layer shapes)\n")
    print("| input | implementation | tokens/s | peak RSS MB | note |")
    print("| --- | --- | ---: | ---: | --- |")
    for size in opts.sizes:
        target, count = SIZES[size]
        for impl in impls:
            code = CHILD.format(root=str(ROOT), args=(impl, str(opts.gguf), str(opts.hf_dir),
                                                      target, count, str(opts.corpus)))
            proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
            if proc.returncode != 0:
                print(f"| {size} ({target} × {count}) | {impl} | failed | | "
                      f"{proc.stderr.strip().splitlines()[-1][:80] if proc.stderr else ''} |")
                continue
            r = json.loads(proc.stdout.strip().splitlines()[-1])
            note = "cuts inputs to 512 tokens" if impl == "stock-defaults" and target > 512 \
                else ""
            print(f"| {size} ({target} × {count}) | {impl} | {r['tokens'] / r['seconds']:,.0f} | "
                  f"{r['peak_mb']:,.0f} | {note} |", flush=True)


if __name__ == "__main__":
    main()
