"""Crafted and damaged GGUF files: each is a one-line ModelLoadError naming the file and the
field, from every place a model is loaded, never an abort inside llama.cpp (exit 134, a gdb
dump).  The CLI cases run in a subprocess, where an abort would show as -6."""

from __future__ import annotations

import os
import shutil
import struct
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from gguf_embed import Engine, Index
from gguf_embed.errors import ModelLoadError
from gguf_embed.gguf_header import TYPE_SIZES, check_gguf, read_header

MAIN = "from gguf_embed.cli import main; import sys; sys.argv[0] = 'gguf-embed'; main()"


def patched_field(src: Path, dst: Path, key: str, value: int) -> Path:
    """A copy of ``src`` with the metadata ``key`` set to ``value`` (in place, same type)."""
    from gguf import GGUFReader

    shutil.copy(src, dst)
    reader = GGUFReader(dst, "r+")
    reader.fields[key].parts[-1][0] = value
    del reader
    return dst


def patched_bytes(src: Path, dst: Path, offset: int, fmt: str, value: int) -> Path:
    shutil.copy(src, dst)
    with open(dst, "r+b") as fh:
        fh.seek(offset)
        fh.write(struct.pack(fmt, value))
    return dst


def first_tensor_dim_offset(path: Path) -> int:
    """The file offset of the first dimension of the first tensor."""
    from gguf import GGUFReader

    reader = GGUFReader(path)
    parts = reader.tensors[0].field.parts
    dims = parts[3]  # name length, name, n_dims, dims, type, offset
    return int(dims.ctypes.data - reader.data.ctypes.data)


@pytest.fixture(scope="module")
def bad(tmp_path_factory: pytest.TempPathFactory, minilm_path: Path) -> dict[str, Path]:
    out = tmp_path_factory.mktemp("bad-gguf")
    src = minilm_path
    size = src.stat().st_size
    files = {
        "block_count 0": patched_field(src, out / "layers0.gguf", "bert.block_count", 0),
        "block_count 10^6": patched_field(src, out / "layers1e6.gguf", "bert.block_count",
                                          10**6),
        "context_length 2^32-1": patched_field(src, out / "ctx.gguf", "bert.context_length",
                                               2**32 - 1),
        "head_count 0": patched_field(src, out / "heads.gguf", "bert.attention.head_count", 0),
        "tensor count 2^60": patched_bytes(src, out / "tensors.gguf", 8, "<Q", 2**60),
        "metadata count 2^60": patched_bytes(src, out / "kv.gguf", 16, "<Q", 2**60),
        "key length 2^60": patched_bytes(src, out / "key.gguf", 24, "<Q", 2**60),
        "version 1": patched_bytes(src, out / "v1.gguf", 4, "<I", 1),
        "wrong magic": patched_bytes(src, out / "magic.gguf", 0, "<I", 0x12345678),
        "tensor dim 2^62": patched_bytes(src, out / "dims.gguf",
                                         first_tensor_dim_offset(src), "<q", 2**62),
    }
    truncated = out / "truncated-header.gguf"
    truncated.write_bytes(src.read_bytes()[:5000])
    files["truncated header"] = truncated
    short = out / "truncated-data.gguf"
    short.write_bytes(src.read_bytes()[:size // 2])
    files["truncated data"] = short
    tiny = out / "tiny.gguf"
    tiny.write_bytes(b"GGUF\x03\x00")
    files["six bytes"] = tiny
    return files


FIELDS = {  # what each message must name
    "block_count 0": "bert.block_count is 0",
    "block_count 10^6": "bert.block_count is 1,000,000",
    "context_length 2^32-1": "bert.context_length",
    "head_count 0": "bert.attention.head_count is 0",
    "tensor count 2^60": "tensor count",
    "metadata count 2^60": "metadata count",
    "key length 2^60": "metadata key 0",
    "version 1": "GGUF version 1",
    "wrong magic": "not a GGUF file",
    "tensor dim 2^62": "has an impossible shape",
    "truncated header": "tokenizer.ggml.tokens",
    "truncated data": "past the end of the file",
    "six bytes": "truncated GGUF header",
}


@pytest.mark.parametrize("case", sorted(FIELDS))
def test_every_loader_refuses_with_one_line(bad: dict[str, Path], case: str) -> None:
    from gguf_embed.reranker import Reranker, gguf_header, looks_like_reranker

    path = bad[case]
    for load in (lambda: Engine(path), lambda: Engine(path, vocab_only=True),
                 lambda: Reranker(path), lambda: check_gguf(path)):
        with pytest.raises(ModelLoadError) as caught:
            load()
        message = str(caught.value)
        assert "\n" not in message and str(path) in message and FIELDS[case] in message, \
            message
    if case not in ("block_count 0", "block_count 10^6", "context_length 2^32-1",
                    "head_count 0"):  # the header itself is broken: so is reading it
        with pytest.raises(ModelLoadError):
            gguf_header(path)
        with pytest.raises(ModelLoadError):
            looks_like_reranker(path)


def run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-c", MAIN, *args], capture_output=True, text=True,
                          timeout=300, env={**os.environ,
                                            "PYTHONPATH": str(Path(__file__).parent.parent)})


def assert_one_line_error(done: subprocess.CompletedProcess[str], path: Path,
                          field: str) -> None:
    assert done.returncode == 1, (done.returncode, done.stderr[-2000:])  # -6: an abort
    errors = [line for line in done.stderr.splitlines() if line.strip()]
    assert len(errors) == 1 and errors[0].startswith("Error: "), done.stderr[-2000:]
    assert str(path) in errors[0] and field in errors[0], errors[0]
    assert "GGML_ASSERT" not in done.stdout + done.stderr


@pytest.mark.parametrize("case", ["block_count 0", "block_count 10^6"])
def test_embed_doctor_and_search_rerank_exit_1(bad: dict[str, Path], case: str,
                                                tmp_path: Path, minilm_path: Path,
                                                minilm: Engine) -> None:
    path = bad[case]
    assert_one_line_error(run("embed", "-m", str(path), "hello"), path, FIELDS[case])
    assert_one_line_error(run("doctor", "-m", str(path)), path, FIELDS[case])
    docs = tmp_path / "docs"
    docs.mkdir()
    (docs / "a.md").write_text("# rotating logs\n\nlogrotate rotates logs\n")
    db = tmp_path / "i.db"
    with Index(db, minilm) as index:
        index.add([docs])
    reranker = tmp_path / f"bad-reranker-{case.split()[-1].replace('^', '')}.gguf"
    shutil.copy(path, reranker)
    done = run("search", "rotate logs", "--db", str(db), "-m", str(minilm_path), "--rerank",
               str(reranker))
    assert_one_line_error(done, reranker, FIELDS[case])
    assert done.stdout == ""


def test_good_models_pass_and_match_what_llama_cpp_reads(models_dir: Path,
                                                         minilm: Engine) -> None:
    for path in sorted(models_dir.glob("*.gguf")):
        header = check_gguf(path)
        assert header.arch in ("bert", "qwen3"), path
        assert header.tensors, path
    header = read_header(minilm.path)
    assert header.metadata["bert.block_count"] == 6
    assert header.metadata["bert.embedding_length"] == minilm.n_embd
    assert minilm.embed(["still works"]).shape == (1, 384)
    assert np.isfinite(minilm.embed(["still works"])).all()


def test_type_sizes_match_ggml() -> None:
    from gguf.constants import GGML_QUANT_SIZES

    known = {int(t): size for t, size in GGML_QUANT_SIZES.items()}
    for ttype, size in TYPE_SIZES.items():
        assert known[ttype] == size, ttype
