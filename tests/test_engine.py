"""Engine behaviour: batching, Matryoshka, limits, bad model files, quantized models."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from gguf_embed import (
    Engine,
    EngineError,
    EngineOptions,
    InputError,
    InputTooLong,
    InvalidDimensions,
    ModelLoadError,
    ModelNotFound,
)


def assert_same_vectors(a: np.ndarray, b: np.ndarray) -> None:
    """Equal up to float rounding: flash attention rounds K/V through F16 and kernels differ
    with batch shape, so bit equality is not promised; a leak between sequences would show
    as cosines far below these bounds."""
    assert a.shape == b.shape
    assert float((a * b).sum(axis=1).min()) >= 0.9999
    np.testing.assert_allclose(a, b, atol=3e-3)


def corpus_texts(corpora: Path, n: int) -> list[str]:
    pages = sorted((corpora / "tldr-linux" / "pages").glob("*.md"))[:n]
    return [p.read_text(encoding="utf-8") for p in pages]


@pytest.mark.parametrize("engine_name", ["minilm", "qwen"])
def test_batched_equals_one_by_one(engine_name: str, request, corpora: Path) -> None:
    engine: Engine = request.getfixturevalue(engine_name)
    texts = [*corpus_texts(corpora, 40), "a", "short one", "Zwei Wörter"]
    batched = engine.embed(texts, truncate=True)
    single = np.stack([engine.embed([t], truncate=True)[0] for t in texts])
    assert batched.shape == (len(texts), engine.dims)
    assert batched.dtype == np.float32 and batched.flags["C_CONTIGUOUS"]
    assert_same_vectors(batched, single)
    np.testing.assert_allclose(np.linalg.norm(batched, axis=1), 1.0, atol=1e-5)


def test_order_is_input_order_whatever_the_lengths(qwen: Engine) -> None:
    texts = ["word " * 300, "tiny", "word " * 50, "mid " * 120]
    vectors = qwen.embed(texts)
    for i, text in enumerate(texts):
        assert_same_vectors(vectors[i:i + 1], qwen.embed([text]))


@pytest.mark.parametrize("options", [
    EngineOptions(kv_unified=False), EngineOptions(flash_attn=False),
    EngineOptions(batch_tokens=2048, kv_unified=False, max_seqs=16)])
def test_engine_settings_give_the_same_vectors(qwen_path: Path, qwen: Engine, corpora: Path,
                                               options: EngineOptions) -> None:
    texts = [*corpus_texts(corpora, 12), "short", "word " * 600]
    with Engine(qwen_path, options=options) as other:
        assert_same_vectors(other.embed(texts), qwen.embed(texts))


def test_matryoshka_is_cut_and_renormalized(qwen: Engine) -> None:
    texts = ["first text", "second, longer text about files"]
    full = qwen.embed(texts)
    for dims in (1, 32, 100, qwen.dims):
        cut = qwen.embed(texts, dimensions=dims)
        expected = full[:, :dims] / np.linalg.norm(full[:, :dims], axis=1, keepdims=True)
        assert cut.shape == (2, dims)
        np.testing.assert_allclose(cut, expected, atol=1e-6)


@pytest.mark.parametrize("dims", [0, -3, 257, 10_000])
def test_dimensions_out_of_range(qwen: Engine, dims: int) -> None:
    with pytest.raises(InvalidDimensions, match="dimensions must be"):
        qwen.embed(["x"], dimensions=dims)


def test_too_long_raises_with_details(minilm: Engine) -> None:
    text = "word " * 2000
    with pytest.raises(InputTooLong) as info:
        minilm.embed(["fine", text])
    assert info.value.index == 1
    assert info.value.n_tokens > minilm.max_tokens == info.value.limit == 512
    assert "input 1 has" in str(info.value)


@pytest.mark.parametrize("engine_name", ["minilm", "qwen"])
def test_truncation_is_reported_and_keeps_the_end_token(engine_name: str, request) -> None:
    engine: Engine = request.getfixturevalue(engine_name)
    long_text = "lorem ipsum dolor " * 2000
    result = engine.encode(["short", long_text], truncate=True)
    assert result.truncated == [1]
    assert result.token_counts[1] == engine.max_tokens
    tokens = engine.tokenize(long_text)
    kept = engine._truncate(tokens)
    assert len(kept) == engine.max_tokens and kept[-1] == tokens[-1]  # EOS / [SEP] kept
    expected = engine.embed_prepared([kept]).vectors[0]
    assert_same_vectors(result.vectors[1:2], expected[None, :])


def test_eos_appended_once(qwen: Engine, models_dir: Path) -> None:
    tokens = qwen.tokenize("hello")
    eos = qwen._eos_id
    assert tokens[-1] == eos and tokens[-2] != eos
    with Engine(models_dir / "tiny-qwen3-eos-f32.gguf") as with_flag:
        assert with_flag.tokenize("hello").tolist() == tokens.tolist()
    # the literal text is not the EOS token
    assert qwen.tokenize("<|endoftext|>")[:-1].tolist() != [eos]


def test_token_id_input_matches_text(qwen: Engine) -> None:
    text = "find files by name"
    ids = qwen.tokenize(text)[:-1].tolist()  # without EOS: it is added
    prepared = qwen.prepare([ids])
    np.testing.assert_allclose(qwen.embed_prepared(prepared).vectors, qwen.embed([text]),
                               atol=1e-6)
    assert prepared.sequences[0].tolist() == qwen.prepare([text]).sequences[0].tolist()
    with pytest.raises(InputError, match="outside"):
        qwen.prepare([[10**9]])
    with pytest.raises(InputError, match="outside"):
        qwen.embed_prepared([np.array([10**9], dtype=np.int64)])
    with pytest.raises(InputError, match="outside"):  # never wrapped into range by a cast
        qwen.prepare([np.array([2**32 + 5], dtype=np.int64)])
    with pytest.raises(InputError, match="outside"):
        qwen.prepare([[1.5, 2.0]])


@pytest.mark.parametrize("bad", [[""], ["ok", ""]])
def test_empty_input_is_an_error(qwen: Engine, bad: list[str]) -> None:
    with pytest.raises(InputError, match="empty"):
        qwen.embed(bad)


def test_missing_model_file(tmp_path: Path) -> None:
    with pytest.raises(ModelNotFound, match="not found"):
        Engine(tmp_path / "nope.gguf")


def test_not_a_gguf_file(tmp_path: Path) -> None:
    bad = tmp_path / "model.gguf"
    bad.write_bytes(b"<html>not a model</html>" * 10)
    with pytest.raises(ModelLoadError, match="not a GGUF file"):
        Engine(bad)


def test_truncated_gguf_file(tmp_path: Path, qwen_path: Path) -> None:
    bad = tmp_path / "cut.gguf"
    bad.write_bytes(qwen_path.read_bytes()[: 200_000])
    with pytest.raises(ModelLoadError, match="cannot load"):
        Engine(bad)


QUANT_SCRIPT = """
import json, sys
import numpy as np
from gguf_embed import Engine
texts = ["hello world", "list files in a directory", "Grüße aus Köln"]
with Engine(sys.argv[1]) as q, Engine(sys.argv[2]) as ref:
    a, b = q.embed(texts), ref.embed(texts)
print(json.dumps({"cos": (a * b).sum(1).tolist(), "pair": float(a[0] @ a[1])}))
"""


@pytest.mark.parametrize("name,floor", [("tiny-qwen3-q4_k_m.gguf", 0.93),
                                        ("tiny-qwen3-q8_0.gguf", 0.995)])
def test_quantized_model_runs_in_a_subprocess(models_dir: Path, name: str, floor: float) -> None:
    """A quantized model must run: a native AVX-512/AMX build segfaults here (llama.cpp
    #20824). A subprocess turns such a crash into a failure instead of killing pytest."""
    proc = subprocess.run(
        [sys.executable, "-c", QUANT_SCRIPT, str(models_dir / name),
         str(models_dir / "tiny-qwen3-f32.gguf")],
        capture_output=True, text=True, timeout=300,
    )
    assert proc.returncode == 0, f"exit {proc.returncode} (negative = signal): {proc.stderr}"
    assert proc.stderr == ""  # the library never prints
    result = json.loads(proc.stdout)
    assert min(result["cos"]) >= floor
    assert result["pair"] < 0.9


def test_info_describes_the_model(qwen: Engine, minilm: Engine) -> None:
    info = qwen.info()
    assert info["pooling"] == "last" and info["causal"] and info["eos"]
    assert info["dims"] == 256 and info["context"] == 2048
    assert "Instruct:" in info["query_prompt"]
    info = minilm.info()
    assert info["pooling"] == "mean" and not info["causal"] and info["dims"] == 384


def test_long_inputs_choose_flash_attention_by_device_and_length(qwen: Engine) -> None:
    from gguf_embed.engine import LONG_FLASH_ATTN_CPU_MAX

    assert qwen.n_gpu_layers == 0  # this suite runs on the CPU build
    assert qwen.long_flash_attn(LONG_FLASH_ATTN_CPU_MAX) is True
    assert qwen.long_flash_attn(LONG_FLASH_ATTN_CPU_MAX + 256) is False
    forced = Engine(qwen.path, options=EngineOptions(long_flash_attn=True))
    try:
        assert forced.long_flash_attn(32768) is True and forced.info()["long_flash_attn"] is True
    finally:
        forced.close()


@pytest.mark.parametrize("engine_name", ["qwen", "minilm"])
def test_side_lane_gives_the_same_vectors_while_the_main_lane_is_held(engine_name: str,
                                                                     request) -> None:
    """A server embeds small requests in the side lane while a large request's decode holds
    the main context (batcher.py): it must not wait for the main lock, and it must give the
    vectors the main lane gives; fewer threads on the main lane change nothing either."""
    import threading

    engine: Engine = request.getfixturevalue(engine_name)
    if engine.side_threads == 0:  # a one-core machine: no side lane
        with pytest.raises(EngineError, match="no side lane"):
            engine.embed_side(engine.prepare(["green tea"]))
        return
    prepared = engine.prepare(["green tea", "a longer text about black coffee and milk"])
    main = engine.embed_prepared(prepared, dimensions=None)
    held, release = threading.Event(), threading.Event()

    def hold_main() -> None:
        with engine._lock.hold():  # as a decode in flight on the main context does
            held.set()
            release.wait(30)

    holder = threading.Thread(target=hold_main)
    holder.start()
    try:
        assert held.wait(30)
        side = engine.embed_side(prepared)  # returns while the main lane is still held
        assert holder.is_alive()
    finally:
        release.set()
        holder.join()
    assert_same_vectors(side.vectors, main.vectors)
    assert side.token_counts == main.token_counts
    fewer = engine.embed_prepared(prepared, threads=1)
    assert_same_vectors(fewer.vectors, main.vectors)


def test_one_thread_engine_has_no_side_lane(qwen_path: Path) -> None:
    with Engine(qwen_path, n_threads=1) as engine:
        assert engine.side_threads == 0
        with pytest.raises(EngineError, match="no side lane"):
            engine.embed_side(engine.prepare(["green tea"]))
