"""Build the tiny test rerankers into models/ (offline; nothing here is committed).

    python -m tests.support.build_rerank_models [--out DIR] [--corpus DIR]

``python -m tests.support.build_models`` builds them too, with the embedding test models.

  tiny-qwen3-reranker/        Qwen3ForCausalLM (the test Qwen3's shape and BPE tokenizer),
      converted by llama.cpp's converter as a Qwen3-Reranker: the "yes"/"no" rows of the LM
      head become cls.output, pooling "rank"          -> tiny-qwen3-reranker-f32.gguf
  tiny-qwen3-reranker-nohead-f32.gguf   the same file without cls.output and rank metadata,
      like Qwen3-Reranker GGUFs made before llama.cpp knew rerankers (must be refused)
  tiny-xlmr-reranker/         XLMRobertaForSequenceClassification (num_labels=1, like
      bge-reranker-base) with a sentencepiece unigram tokenizer trained on the tldr pages
                              -> tiny-xlmr-reranker-f32.gguf

The real-shape rerankers for scripts/bench_rerank.py: ``python -m scripts.build_shape_models
--rerankers``.
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

from scripts.llama_sdist import llama_cpp_dir
from scripts.model_making import log, run_convert
from scripts.reranker_making import make_qwen3_reranker, make_xlmr_reranker, strip_head

ROOT = Path(__file__).resolve().parent.parent.parent
DATA = ROOT / "tests" / "data"
TINY_XLMR = {"hidden_size": 128, "intermediate_size": 256, "num_hidden_layers": 2,
             "num_attention_heads": 4, "max_position_embeddings": 514, "type_vocab_size": 1,
             "initializer_range": 0.2}
OUTPUTS = ["tiny-qwen3-reranker-f32.gguf", "tiny-qwen3-reranker-nohead-f32.gguf",
           "tiny-xlmr-reranker-f32.gguf"]
SOURCES = ["tiny-qwen3-reranker", "tiny-xlmr-reranker"]


def build_rerankers(out: Path, corpus: Path) -> None:
    qwen = make_qwen3_reranker(out / "tiny-qwen3-reranker", corpus, {}, 4321)
    target = out / "tiny-qwen3-reranker-f32.gguf"
    if not target.exists():
        run_convert(llama_cpp_dir(), qwen, target, "f32", pre="qwen2")
    nohead = out / "tiny-qwen3-reranker-nohead-f32.gguf"
    if not nohead.exists():
        strip_head(target, nohead)
    xlmr = make_xlmr_reranker(out / "tiny-xlmr-reranker", corpus, TINY_XLMR, 4321)
    target = out / "tiny-xlmr-reranker-f32.gguf"
    if not target.exists():
        run_convert(llama_cpp_dir(), xlmr, target, "f32")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=ROOT / "models")
    parser.add_argument("--corpus", type=Path, default=DATA, help="holds tldr-linux/pages")
    opts = parser.parse_args()
    opts.out.mkdir(parents=True, exist_ok=True)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    build_rerankers(opts.out, opts.corpus)
    log("reranker test models ready in " + str(opts.out))


if __name__ == "__main__":
    main()
