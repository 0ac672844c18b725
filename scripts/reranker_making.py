"""Making reranker checkpoints offline, with random weights, for llama.cpp's converter:

- a Qwen3-Reranker: Qwen3ForCausalLM with a byte-level BPE whose "yes" and "no" are single
  tokens; llama.cpp's converter knows it by "qwen3-reranker" in the folder name and keeps the
  "yes"/"no" rows of the LM head as cls.output (pooling "rank");
- a BERT-family cross-encoder like bge-reranker-base: XLMRobertaForSequenceClassification
  (num_labels=1) with a sentencepiece unigram tokenizer in fairseq's layout.

Shared by ``tests/support/build_rerank_models.py`` (the tiny test rerankers) and
``scripts/build_shape_models.py --rerankers`` (the real layer shapes, for speed work).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from scripts.model_making import TINY_QWEN3, copy_gguf, corpus_texts, log, train_tokenizer

# the layer shapes of Qwen3-Reranker-0.6B and bge-reranker-base (XLM-R base), from their
# config.json on the hub
SHAPE_QWEN3_RERANKER: dict[str, Any] = {
    "hidden_size": 1024, "intermediate_size": 3072, "num_hidden_layers": 28,
    "num_attention_heads": 16, "num_key_value_heads": 8, "head_dim": 128,
    "initializer_range": 0.02, "max_position_embeddings": 40960}
SHAPE_XLMR_RERANKER: dict[str, Any] = {
    "hidden_size": 768, "intermediate_size": 3072, "num_hidden_layers": 12,
    "num_attention_heads": 12, "max_position_embeddings": 514, "type_vocab_size": 1,
    "initializer_range": 0.02}


def make_qwen3_reranker(src: Path, corpus: Path, shape: dict[str, Any], seed: int) -> Path:
    """A Qwen3ForCausalLM checkpoint in ``src`` (whose name must hold "qwen3-reranker"): the
    tiny test Qwen3 with ``shape`` laid over it."""
    if "qwen3-reranker" not in src.name:
        raise ValueError(f"{src.name}: the converter knows a reranker by 'qwen3-reranker'")
    if not (src / "model.safetensors").exists():
        import torch
        from transformers import Qwen3Config, Qwen3ForCausalLM

        log(f"saving {src.name} with random weights")
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


def make_xlmr_reranker(src: Path, corpus: Path, shape: dict[str, Any], seed: int) -> Path:
    """An XLMRobertaForSequenceClassification checkpoint (one label) in ``src``."""
    if not (src / "model.safetensors").exists():
        import sentencepiece as spm
        import torch
        from transformers import (
            XLMRobertaConfig,
            XLMRobertaForSequenceClassification,
            XLMRobertaTokenizer,
        )

        log(f"saving {src.name} with random weights")
        src.mkdir(parents=True, exist_ok=True)
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
    log(f"writing {dst.name} (no reranker head)")
    copy_gguf(src, dst, drop_tensors=frozenset({"cls.output.weight"}), drop_key=lambda name: (
        name.endswith((".pooling_type", ".classifier.output_labels")) or "rerank" in name))
