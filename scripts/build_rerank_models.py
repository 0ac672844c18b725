#!/usr/bin/env python3
"""Build reranker GGUFs with random weights into models/ (offline; nothing here is committed).

  tiny-qwen3-reranker/          Qwen3ForCausalLM (the test Qwen3's shape and BPE tokenizer),
      converted by llama.cpp's converter as a Qwen3-Reranker: the "yes"/"no" rows of the LM
      head become cls.output, pooling "rank"          -> tiny-qwen3-reranker-f32.gguf
  tiny-qwen3-reranker-nohead-f32.gguf   the same file without cls.output and rank metadata,
      like Qwen3-Reranker GGUFs made before llama.cpp knew rerankers (must be refused)
  tiny-xlmr-reranker/           XLMRobertaForSequenceClassification (num_labels=1, like
      bge-reranker-base) with a sentencepiece unigram tokenizer trained on the tldr corpus
                                -> tiny-xlmr-reranker-f32.gguf
  --shapes: the same two architectures at the real layer shapes of Qwen3-Reranker-0.6B and
      bge-reranker-base (XLM-R base), Q8_0 like the catalog files, for scripts/bench_rerank.py.

    python scripts/build_rerank_models.py [--shapes]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from build_test_models import (  # noqa: E402
    TINY_QWEN3,
    corpus_texts,
    log,
    quantize,
    run_convert,
    train_tokenizer,
)
from llama_sdist import llama_cpp_dir  # noqa: E402

TINY_XLMR = {"hidden_size": 128, "intermediate_size": 256, "num_hidden_layers": 2,
             "num_attention_heads": 4, "max_position_embeddings": 514, "type_vocab_size": 1,
             "initializer_range": 0.2}
SHAPE_QWEN3 = {"hidden_size": 1024, "intermediate_size": 3072, "num_hidden_layers": 28,
               "num_attention_heads": 16, "num_key_value_heads": 8, "head_dim": 128,
               "initializer_range": 0.02, "max_position_embeddings": 40960}
SHAPE_XLMR = {"hidden_size": 768, "intermediate_size": 3072, "num_hidden_layers": 12,
              "num_attention_heads": 12, "max_position_embeddings": 514, "type_vocab_size": 1,
              "initializer_range": 0.02}


def build_qwen3(out: Path, corpus: Path, name: str, shape: dict, seed: int) -> Path:
    import torch
    from transformers import Qwen3Config, Qwen3ForCausalLM

    src = out / name  # the converter recognises a reranker by "qwen3-reranker" in the name
    if not (src / "model.safetensors").exists():
        log(f"saving {name} with random weights")
        src.mkdir(parents=True, exist_ok=True)
        # "yes" and "no" must be single tokens: the reranker's head is their LM-head rows
        tok = train_tokenizer([*corpus_texts(corpus), "yes\nno\n" * 500])
        for word in ("yes", "no"):
            if tok.token_to_id(word) is None:
                raise SystemExit(f"the trained tokenizer has no {word!r} token")
        tok.save(str(src / "tokenizer.json"))
        eos = tok.token_to_id("<|endoftext|>")
        (src / "tokenizer_config.json").write_text(json.dumps({
            "tokenizer_class": "PreTrainedTokenizerFast", "eos_token": "<|endoftext|>",
            "pad_token": "<|endoftext|>", "add_bos_token": False, "add_eos_token": False,
            "padding_side": "left"}, indent=2))
        config = Qwen3Config(**{**TINY_QWEN3, **shape, "vocab_size": tok.get_vocab_size(),
                                "eos_token_id": eos, "bos_token_id": eos, "pad_token_id": eos})
        torch.manual_seed(seed)
        model = Qwen3ForCausalLM(config).to(torch.float32).eval()
        model.save_pretrained(src, safe_serialization=True)
    return src


def train_unigram(texts: list[str], folder: Path, vocab_size: int = 2000) -> Path:
    import sentencepiece as spm

    corpus = folder / "corpus.txt"
    corpus.write_text("\n".join(t.replace("\r", "") for t in texts), encoding="utf-8")
    prefix = folder / "spm"
    spm.SentencePieceTrainer.train(
        input=str(corpus), model_prefix=str(prefix), vocab_size=vocab_size,
        model_type="unigram", character_coverage=1.0, unk_id=0, bos_id=1, eos_id=2, pad_id=-1,
        normalization_rule_name="identity", minloglevel=2)
    corpus.unlink()
    (folder / "spm.vocab").unlink()
    # the name XLM-R checkpoints use; llama.cpp's converter reads this file
    return prefix.with_suffix(".model").rename(folder / "sentencepiece.bpe.model")


def build_xlmr(out: Path, corpus: Path, name: str, shape: dict, seed: int) -> Path:
    import torch
    from transformers import (
        XLMRobertaConfig,
        XLMRobertaForSequenceClassification,
        XLMRobertaTokenizer,
    )

    src = out / name
    if not (src / "model.safetensors").exists():
        log(f"saving {name} with random weights")
        src.mkdir(parents=True, exist_ok=True)
        import sentencepiece as spm

        sp = spm.SentencePieceProcessor(model_file=str(train_unigram(corpus_texts(corpus), src)))
        # fairseq's layout, as XLM-R's own tokenizer: <s> <pad> </s> <unk>, pieces, <mask>
        vocab = [("<s>", 0.0), ("<pad>", 0.0), ("</s>", 0.0), ("<unk>", 0.0)]
        vocab += [(sp.IdToPiece(i), sp.GetScore(i)) for i in range(3, sp.GetPieceSize())]
        tok = XLMRobertaTokenizer(vocab=[*vocab, ("<mask>", 0.0)])
        tok.save_pretrained(str(src))
        config = XLMRobertaConfig(**shape, vocab_size=len(tok), num_labels=1,
                                  pad_token_id=1, bos_token_id=0, eos_token_id=2)
        torch.manual_seed(seed)
        model = XLMRobertaForSequenceClassification(config).to(torch.float32).eval()
        model.save_pretrained(src, safe_serialization=True)
    return src


def strip_head(src: Path, dst: Path) -> None:
    """A copy without cls.output.weight and the rank metadata (an old converter's output)."""
    sys.path.insert(0, str(llama_cpp_dir() / "gguf-py"))
    import gguf

    log(f"writing {dst.name} (no reranker head)")
    reader = gguf.GGUFReader(src)
    arch = reader.fields["general.architecture"].contents()
    writer = gguf.GGUFWriter(dst, arch=arch, use_temp_file=False)
    for name, fld in reader.fields.items():
        if name.startswith("GGUF.") or name == "general.architecture":
            continue
        if name.endswith((".pooling_type", ".classifier.output_labels")) or "rerank" in name:
            continue
        vtype = fld.types[0]
        sub = fld.types[-1] if vtype == gguf.GGUFValueType.ARRAY else None
        writer.add_key_value(name, fld.contents(), vtype, sub_type=sub)
    for tensor in reader.tensors:
        if tensor.name != "cls.output.weight":
            writer.add_tensor(tensor.name, tensor.data, raw_shape=tensor.data.shape,
                              raw_dtype=tensor.tensor_type)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=HERE.parent / "models")
    parser.add_argument("--corpus", type=Path, default=HERE.parent.parent / "shared" / "corpora")
    parser.add_argument("--shapes", action="store_true",
                        help="also the real-shape models for the speed benchmark")
    opts = parser.parse_args()
    out: Path = opts.out
    out.mkdir(parents=True, exist_ok=True)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    qwen = build_qwen3(out, opts.corpus, "tiny-qwen3-reranker", {}, 4321)
    target = out / "tiny-qwen3-reranker-f32.gguf"
    if not target.exists():
        run_convert(qwen, target, "f32", pre="qwen2")
    nohead = out / "tiny-qwen3-reranker-nohead-f32.gguf"
    if not nohead.exists():
        strip_head(target, nohead)
    xlmr = build_xlmr(out, opts.corpus, "tiny-xlmr-reranker", TINY_XLMR, 4321)
    target = out / "tiny-xlmr-reranker-f32.gguf"
    if not target.exists():
        run_convert(xlmr, target, "f32")
    if opts.shapes:
        for kind, name, shape in (("qwen3", "shape-qwen3-reranker-0.6b", SHAPE_QWEN3),
                                  ("xlmr", "shape-xlmr-reranker-base", SHAPE_XLMR)):
            f16 = out / f"{name}-f16.gguf"
            q8 = out / f"{name}-q8_0.gguf"
            if not q8.exists():
                build = build_qwen3 if kind == "qwen3" else build_xlmr
                src = build(out, opts.corpus, name, shape, 0)
                run_convert(src, f16, "f16", pre="qwen2" if kind == "qwen3" else None)
                quantize(f16, q8, 7)
    log("reranker models ready in " + str(out))


if __name__ == "__main__":
    main()
