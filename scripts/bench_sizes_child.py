#!/usr/bin/env python3
"""One measurement of scripts/bench_sizes.py, in a fresh process so that peak memory is that
implementation's alone. Prints one JSON line: tokens, seconds, peak_mb, gpu_mb.

    python -m scripts.bench_sizes_child IMPL GGUF HF_DIR TARGET COUNT CORPUS [LLAMA_BIN]
"""

from __future__ import annotations

import argparse
import json
import resource
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path

from gguf_embed import Engine
from gguf_embed._llama import load_backends, physical_cores


def gpu_used() -> float | None:
    if not shutil.which("nvidia-smi"):
        return None
    out = subprocess.run(["nvidia-smi", "--query-gpu=memory.used",
                          "--format=csv,noheader,nounits"],
                         capture_output=True, text=True).stdout.split()
    return float(out[0]) if out else None


class GpuPeak:
    """The most GPU memory in use while running, sampled every 0.1 s."""

    def __init__(self) -> None:
        self.base = gpu_used()
        self.peak = 0.0
        self.running = True
        if self.base is not None:
            threading.Thread(target=self._watch, daemon=True).start()

    def _watch(self) -> None:
        while self.running:
            self.peak = max(self.peak, gpu_used() or 0.0)
            time.sleep(0.1)

    def stop(self) -> float | None:
        self.running = False
        return self.peak - self.base if self.base is not None else None


def make_texts(counter: Engine, corpus: Path, target: int, count: int) -> list[str]:
    """``count`` texts of at most ``target`` tokens each, consecutive words of the tldr pages."""
    words: list[str] = []
    for page in sorted(Path(corpus, "tldr-linux", "pages").glob("*.md")):
        words.extend(page.read_text().split())
    texts, start = [], 0
    for _ in range(count):
        lo, hi = 1, 4 * target
        while lo < hi:
            mid = (lo + hi + 1) // 2
            if len(counter.tokenize(" ".join(words[start:start + mid]))) <= target:
                lo = mid
            else:
                hi = mid - 1
        texts.append(" ".join(words[start:start + lo]))
        start += lo
    return texts


def python_runner(impl: str, gguf: str, hf_dir: str, target: int,
                  n_threads: int) -> Callable[[list[str]], object]:
    """The embed call of an in-process implementation."""
    if impl == "engine":
        engine = Engine(gguf)
        return lambda batch: engine.embed(batch)
    if impl.startswith("stock"):
        from llama_cpp import Llama

        load_backends()  # a BACKEND_DL build (cpu-dispatch) has none until loaded
        # one ubatch for the whole input up to medium; at 30k tokens that would need a 57 GB
        # attention matrix without flash attention, so long inputs go in 512-token ubatches
        kwargs = {} if impl == "stock-defaults" else {
            "n_ctx": target + 64, "n_batch": target + 64,
            "n_ubatch": target + 64 if target <= 4096 else 512}
        llm = Llama(gguf, embedding=True, verbose=False, **kwargs)
        return lambda batch: llm.embed(batch)
    import torch
    from transformers import AutoTokenizer, Qwen3Model

    torch.set_num_threads(n_threads)
    tok = AutoTokenizer.from_pretrained(hf_dir)
    model = Qwen3Model.from_pretrained(hf_dir, dtype=torch.float32,
                                       attn_implementation="sdpa").eval()
    eos_id = tok.convert_tokens_to_ids("<|endoftext|>")

    def run(batch: list[str]) -> None:
        with torch.no_grad():
            for t in batch:
                ids = tok(t, add_special_tokens=False)["input_ids"] + [eos_id]
                model(torch.tensor([ids])).last_hidden_state[0, -1]
    return run


def llama_cpp_seconds(llama_bin: str, gguf: str, texts: list[str], eos: str, target: int,
                      flash: str) -> float:
    """Wall time of llama.cpp's llama-embedding, less that of the same command on one short
    text: loading, warm-up and context set-up cancel (its own perf log is written by a thread
    that can lose its last lines at exit, so it is not read)."""
    pack = 512 if target <= 512 else target + 64

    def embed_file(lines: list[str]) -> float:
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
    return embed_file([t + eos for t in texts]) - base


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    for name in ("impl", "gguf", "hf_dir"):
        parser.add_argument(name)
    parser.add_argument("target", type=int)
    parser.add_argument("count", type=int)
    parser.add_argument("corpus", type=Path)
    parser.add_argument("llama_bin", nargs="?", default="")
    opts = parser.parse_args()
    gpu = GpuPeak()
    counter = Engine(opts.gguf)
    texts = make_texts(counter, opts.corpus, opts.target, opts.count)
    tokens = sum(len(counter.tokenize(t)) for t in texts)
    flash = "on" if opts.target <= 512 or counter.long_flash_attn(opts.target + 64) else "off"
    eos = counter.spec.eos_token if counter.spec.eos else ""  # the token ours appends, as text
    n_threads = getattr(counter, "n_threads", 2)
    counter.close()
    if opts.impl == "llama.cpp":
        seconds = llama_cpp_seconds(opts.llama_bin, opts.gguf, texts, eos, opts.target, flash)
        peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    else:
        run = python_runner(opts.impl, opts.gguf, opts.hf_dir, opts.target, n_threads)
        # warm-up, on short texts: a long one takes minutes
        run([" ".join(t.split()[:200]) for t in texts[:2]])
        t0 = time.perf_counter()
        run(texts)
        seconds = time.perf_counter() - t0
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(json.dumps({"tokens": tokens, "seconds": seconds, "peak_mb": peak,
                      "gpu_mb": gpu.stop()}))


if __name__ == "__main__":
    main()
