"""Making GGUFs offline: a byte-level BPE tokenizer trained on the tldr pages, random-weight
Qwen3 checkpoints, llama.cpp's own converter and quantizer.

Shared by ``scripts/build_shape_models.py`` (real layer shapes, for speed work) and
``tests/support/build_models.py`` / ``tests/support/build_rerank_models.py`` (the tiny test
models). The llama.cpp source folder (``scripts.llama_sdist.llama_cpp_dir()``) is passed in.
The rerankers (a Qwen3-Reranker and an XLM-R cross-encoder) are made by
``scripts/reranker_making.py``.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

QWEN2_SPLIT = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*"
    r"|\s*[\r\n]+|\s+(?!\S)|\s+"
)
SPECIALS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
TINY_QWEN3: dict[str, Any] = {
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
    print(f"[models] {msg}", file=sys.stderr, flush=True)


def corpus_texts(corpus: Path) -> list[str]:
    """The tldr pages under ``corpus/tldr-linux/pages`` (tests/data has them all)."""
    pages = sorted((corpus / "tldr-linux" / "pages").glob("*.md"))
    if not pages:
        raise SystemExit(f"no tldr pages under {corpus}/tldr-linux/pages; pass --corpus DIR")
    return [p.read_text(encoding="utf-8") for p in pages]


def run_convert(llama: Path, model_dir: Path, outfile: Path, outtype: str, *,
                pre: str | None = None) -> None:
    """llama.cpp's convert_hf_to_gguf.py from the source folder ``llama``; ``pre`` forces the
    BPE pre-tokenizer name (our trained tokenizer has no registered checksum, its rules are
    Qwen2's)."""
    patch = (
        "import sys\n"
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
    # the converter is no package: its folder and llama.cpp's gguf-py go first on its path
    path = os.pathsep.join([str(llama), str(llama / "gguf-py"), os.environ.get("PYTHONPATH", "")])
    subprocess.run([sys.executable, "-c", patch], check=True, stdout=sys.stderr, stderr=sys.stderr,
                   env={**os.environ, "PYTHONPATH": path.rstrip(os.pathsep)})


def train_tokenizer(texts: list[str], vocab_size: int = 2048) -> Any:
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


def copy_gguf(src: Path, dst: Path, *, drop_key: Callable[[str], bool] = lambda name: False,
              drop_tensors: frozenset[str] = frozenset(), add_bools: dict[str, bool] | None = None,
              ) -> None:
    """Copy a GGUF without the keys ``drop_key`` names and the tensors in ``drop_tensors``,
    setting the booleans in ``add_bools``."""
    import gguf

    add_bools = add_bools or {}
    reader = gguf.GGUFReader(src)
    arch = reader.fields["general.architecture"].contents()
    writer = gguf.GGUFWriter(dst, arch=arch, use_temp_file=False)
    for name, field in reader.fields.items():
        if name.startswith("GGUF.") or name == "general.architecture":
            continue
        if name in add_bools or drop_key(name):
            continue
        vtype = field.types[0]
        sub = field.types[-1] if vtype == gguf.GGUFValueType.ARRAY else None
        writer.add_key_value(name, field.contents(), vtype, sub_type=sub)
    for name, value in add_bools.items():
        writer.add_bool(name, value)
    for tensor in reader.tensors:
        if tensor.name not in drop_tensors:
            writer.add_tensor(tensor.name, tensor.data, raw_shape=tensor.data.shape,
                              raw_dtype=tensor.tensor_type)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()


def set_add_eos(src: Path, dst: Path) -> None:
    """Copy a GGUF with tokenizer.ggml.add_eos_token = true (as newer Qwen3-Embedding GGUFs)."""
    log(f"writing {dst.name} (add_eos_token = true)")
    copy_gguf(src, dst, add_bools={"tokenizer.ggml.add_eos_token": True})


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
