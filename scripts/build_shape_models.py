#!/usr/bin/env python3
"""GGUFs with random weights at the exact layer shapes of real models, for speed measurements
without downloading (speed does not depend on weight values): Qwen3-Embedding-0.6B / -4B, and
with --rerankers Qwen3-Reranker-0.6B and bge-reranker-base (for scripts/bench_rerank.py).

    python -m scripts.build_shape_models                 # 0.6B: F16, Q8_0, Q4_K_M
    python -m scripts.build_shape_models --shape 4b      # 4B (needs ~20 GB RAM while saving)
    python -m scripts.build_shape_models --rerankers     # the two reranker shapes: F16, Q8_0

The vocabulary is the small BPE of the test models (2k tokens, not 151k; the XLM-R one a 2k
unigram): it changes only the embedding lookup table, which costs nothing per token.  Files go
to models/ (not committed).
"""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path

from scripts.llama_sdist import llama_cpp_dir
from scripts.model_making import (
    TINY_QWEN3,
    corpus_texts,
    log,
    quantize,
    run_convert,
    train_tokenizer,
)
from scripts.reranker_making import (
    SHAPE_QWEN3_RERANKER,
    SHAPE_XLMR_RERANKER,
    make_qwen3_reranker,
    make_xlmr_reranker,
)

ROOT = Path(__file__).resolve().parent.parent

SHAPES = {
    # from the models' config.json on the hub (Qwen3-Embedding-0.6B / -4B)
    "0.6b": {"hidden_size": 1024, "intermediate_size": 3072, "num_hidden_layers": 28,
             "num_attention_heads": 16, "num_key_value_heads": 8, "head_dim": 128},
    "4b": {"hidden_size": 2560, "intermediate_size": 9728, "num_hidden_layers": 36,
           "num_attention_heads": 32, "num_key_value_heads": 8, "head_dim": 128},
}
QUANTS = {"q8_0": 7, "q4_k_m": 15}


def build(shape: str, out: Path, corpus: Path) -> None:
    import torch
    from transformers import Qwen3Config, Qwen3ForCausalLM

    src = out / f"shape-qwen3-{shape}"
    f16 = out / f"shape-qwen3-{shape}-f16.gguf"
    if not f16.exists():
        if not (src / "config.json").exists():
            log(f"saving a random-weight Qwen3 at the {shape} shape")
            src.mkdir(parents=True, exist_ok=True)
            tok = train_tokenizer(corpus_texts(corpus))
            tok.save(str(src / "tokenizer.json"))
            eos = tok.token_to_id("<|endoftext|>")
            (src / "tokenizer_config.json").write_text(json.dumps({
                "tokenizer_class": "PreTrainedTokenizerFast", "eos_token": "<|endoftext|>",
                "pad_token": "<|endoftext|>"}))
            config = Qwen3Config(**{**TINY_QWEN3, **SHAPES[shape],
                                    "max_position_embeddings": 40960,
                                    "vocab_size": tok.get_vocab_size(), "eos_token_id": eos,
                                    "bos_token_id": eos, "pad_token_id": eos,
                                    "initializer_range": 0.02})
            torch.manual_seed(0)
            with torch.no_grad():
                model = Qwen3ForCausalLM(config).to(torch.float16)
            model.save_pretrained(src, safe_serialization=True)
            (src / "modules.json").write_text(json.dumps([
                {"idx": 1, "name": "1", "path": "1_Pooling",
                 "type": "sentence_transformers.models.Pooling"}]))
            (src / "1_Pooling").mkdir(exist_ok=True)
            (src / "1_Pooling" / "config.json").write_text(json.dumps(
                {"pooling_mode_lasttoken": True}))
        run_convert(llama_cpp_dir(), src, f16, "f16", pre="qwen2")
    for name, ftype in QUANTS.items():
        target = out / f"shape-qwen3-{shape}-{name}.gguf"
        if not target.exists():
            quantize(f16, target, ftype)


def build_rerankers(out: Path, corpus: Path) -> None:
    """shape-qwen3-reranker-0.6b-*.gguf and shape-xlmr-reranker-base-*.gguf, F16 and Q8_0 (the
    catalog files' quantization)."""
    for name, make, shape, pre in (
            ("shape-qwen3-reranker-0.6b", make_qwen3_reranker, SHAPE_QWEN3_RERANKER, "qwen2"),
            ("shape-xlmr-reranker-base", make_xlmr_reranker, SHAPE_XLMR_RERANKER, None)):
        f16 = out / f"{name}-f16.gguf"
        q8 = out / f"{name}-q8_0.gguf"
        if not f16.exists():
            src = make(out / name, corpus, shape, 0)
            run_convert(llama_cpp_dir(), src, f16, "f16", pre=pre)
        if not q8.exists():
            quantize(f16, q8, QUANTS["q8_0"])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shape", choices=sorted(SHAPES), default="0.6b")
    parser.add_argument("--rerankers", action="store_true",
                        help="build the two reranker shapes instead of an embedding model")
    parser.add_argument("--out", type=Path, default=ROOT / "models")
    parser.add_argument("--corpus", type=Path, default=ROOT / "tests" / "data",
                        help="holds tldr-linux/pages (the tokenizer's training text)")
    opts = parser.parse_args()
    opts.out.mkdir(parents=True, exist_ok=True)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    if opts.rerankers:
        build_rerankers(opts.out, opts.corpus)
    else:
        build(opts.shape, opts.out, opts.corpus)


if __name__ == "__main__":
    main()
