"""How long embedding a folder will take on this machine, known before the run starts.

``index`` on a CPU with a large model (the default Qwen3-Embedding-4B does ~7 GFLOP per token)
can take half an hour for a folder that a small model embeds in minutes. :func:`estimate_index`
says so first, from three numbers: the tokens to embed (files new or changed since the index
last saw them; their text sampled and tokenized, the rest counted from their size), the
model's FLOPs per token (from its GGUF header) and a measured rate (one short calibration
decode, only when an optimistic rate already says the run would be slow). It returns numbers;
the CLI decides what to print.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from stat import S_ISREG
from typing import Any

from .extract import PDF_SUFFIXES

SLOW_SECONDS = 180.0  # "more than a few minutes": worth a word before starting
# An optimistic CPU rate (GFLOP/s per core: an AVX-512 core at full FMA throughput is
# ~100-150). A run that is fast even at this rate needs no calibration decode.
OPTIMISTIC_GFLOPS_PER_CORE = 150.0
CALIBRATION_TOKENS = 96
SAMPLE_FILES = 24  # text files read and tokenized to learn bytes per token
PDF_BYTES_PER_TOKEN = 20.0  # PDFs carry fonts, images and compression: rough
TEXT_BYTES_PER_TOKEN = 4.0  # when no text file can be sampled
# Faster catalog choices and their matmul weights in the layers (2 FLOP each per token),
# from the models' config.json: Qwen3-Embedding-0.6B has 28 layers of 15.7 M weights.
FASTER_MODELS: dict[str, float] = {"qwen3-embedding-0.6b": 28 * 15_728_640}
CALIBRATION_TEXT = (
    "Indexing a folder turns every document into chunks of text, and each chunk into a "
    "vector that a search compares with the vector of a question. ")


@dataclass(frozen=True)
class Estimate:
    """What an index run is expected to cost. ``rate`` is tokens per second, ``measured``
    says whether it comes from a calibration decode or from the optimistic bound."""

    files: int
    tokens: int
    flops_per_token: float
    rate: float
    measured: bool
    gpu: bool
    faster: str | None = None  # a catalog model with fewer FLOPs per token
    faster_seconds: float | None = None

    @property
    def seconds(self) -> float:
        return self.tokens / self.rate if self.rate > 0 else float("inf")

    @property
    def slow(self) -> bool:
        """Worth saying before the run: no GPU and more than :data:`SLOW_SECONDS`."""
        return not self.gpu and self.seconds > SLOW_SECONDS


def layer_weights(metadata: Mapping[str, str]) -> float:
    """Matmul weights in a model's layers, from its GGUF header (attention projections and
    the feed-forward; a gated FFN, as in Qwen3/Llama/Gemma, has three matrices, BERT's two)."""
    arch = metadata.get("general.architecture", "")

    def key(name: str, default: int = 0) -> int:
        value = str(metadata.get(f"{arch}.{name}", ""))
        return int(value) if value.isdigit() else default

    n_layer, d = key("block_count"), key("embedding_length")
    n_head = key("attention.head_count", 1)
    n_kv = key("attention.head_count_kv", n_head)
    head = key("attention.key_length", d // max(n_head, 1))
    ff = key("feed_forward_length")
    gated = arch not in ("bert", "nomic-bert", "jina-bert-v2", "modern-bert", "neo-bert")
    per_layer = 2 * d * n_head * head + 2 * d * n_kv * head + (3 if gated else 2) * d * ff
    return float(n_layer * per_layer)


def flops_per_token(metadata: Mapping[str, str]) -> float:
    """2 FLOP per layer weight (attention over a chunk's own tokens is left out: at chunk
    lengths it is a few per cent)."""
    return 2 * layer_weights(metadata)


def calibrate(engine: Any, tokens: int = CALIBRATION_TOKENS) -> float:
    """Tokens per second of ``engine`` on one short packed decode (after a tiny warm-up)."""
    engine.embed(["warm up"])
    ids = engine.tokenize(CALIBRATION_TEXT * 4)
    cut = max(8, tokens // 4)
    seqs = [ids[i:i + cut] for i in range(4)]  # four sequences, as packed documents are
    start = time.perf_counter()
    engine.embed_prepared(seqs)
    elapsed = time.perf_counter() - start
    return sum(len(s) for s in seqs) / max(elapsed, 1e-9)


def pending_tokens(engine: Any, paths: Iterable[Path], known: Mapping[str, tuple[Any, ...]],
                   *, overlap_factor: float = 1.0, max_file_bytes: int | None = None,
                   ) -> tuple[int, int]:
    """(files, tokens) to embed among ``paths``: those not in ``known`` (the index's
    path → (id, hash, size, mtime)) with the same size and mtime. Up to :data:`SAMPLE_FILES`
    text files are tokenized to learn their bytes per token; the other text files are counted
    from their size at that ratio, PDFs at :data:`PDF_BYTES_PER_TOKEN`."""
    text_sizes: list[tuple[Path, int]] = []
    pdf_bytes = 0
    for path in paths:
        try:
            stat = path.stat()
        except OSError:
            continue
        old = known.get(str(path))
        if old is not None and old[2] == stat.st_size and old[3] == stat.st_mtime:
            continue
        if max_file_bytes is not None and stat.st_size > max_file_bytes:
            continue
        if not S_ISREG(stat.st_mode):  # a fifo or device made since the walk: not indexed
            continue
        if path.suffix.lower() in PDF_SUFFIXES:
            pdf_bytes += stat.st_size
        else:
            text_sizes.append((path, stat.st_size))
    sampled_bytes = sampled_tokens = 0
    for path, size in text_sizes[:SAMPLE_FILES]:
        try:
            text = _sample(path, size).decode("utf-8", "replace")
        except OSError:
            continue
        if text.strip():
            sampled_tokens += len(engine.tokenize(text))
            sampled_bytes += size
    ratio = sampled_bytes / sampled_tokens if sampled_tokens else TEXT_BYTES_PER_TOKEN
    text_bytes = sum(size for _, size in text_sizes)
    tokens = (text_bytes / ratio + pdf_bytes / PDF_BYTES_PER_TOKEN) * overlap_factor
    return len(text_sizes) + (pdf_bytes > 0), int(tokens)


def _sample(path: Path, size: int) -> bytes:
    """The first ``size`` bytes of the regular file ``path``: opened without blocking and
    checked on the open file, so that a fifo swapped in since the walk cannot hang ``index``
    (``OSError`` for anything but a regular file)."""
    fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_BINARY", 0))
    try:
        if not S_ISREG(os.fstat(fd).st_mode):
            raise OSError(f"{path} is not a regular file")
        parts: list[bytes] = []
        while size > 0 and (piece := os.read(fd, size)):
            parts.append(piece)
            size -= len(piece)
        return b"".join(parts)
    finally:
        os.close(fd)


def estimate_index(engine: Any, paths: Iterable[Path], known: Mapping[str, tuple[Any, ...]],
                   *, overlap_factor: float = 1.0, max_file_bytes: int | None = None,
                   cores: int | None = None,
                   measure: Callable[[Any], float] | None = None) -> Estimate:
    """How long embedding the new and changed files among ``paths`` will take with
    ``engine``. With a GPU, nothing is walked or measured (``gpu=True``, zero tokens)."""
    gpu = bool(getattr(engine, "n_gpu_layers", 0))
    fpt = flops_per_token(engine.metadata)
    if gpu:
        return Estimate(0, 0, fpt, float("inf"), False, True)
    files, tokens = pending_tokens(engine, paths, known, overlap_factor=overlap_factor,
                                   max_file_bytes=max_file_bytes)
    cores = cores or getattr(engine, "n_threads", None) or os.cpu_count() or 1
    rate = OPTIMISTIC_GFLOPS_PER_CORE * 1e9 * cores / fpt if fpt > 0 else float("inf")
    measured = False
    if tokens and tokens / rate > SLOW_SECONDS:  # slow even at the optimistic rate: measure
        rate, measured = (measure or calibrate)(engine), True
    faster = faster_seconds = None
    for name, weights in FASTER_MODELS.items():
        if name != getattr(getattr(engine, "spec", None), "name", None) \
                and 2 * weights < 0.5 * fpt:
            faster = name
            faster_seconds = tokens / rate * (2 * weights / fpt) if rate > 0 else None
            break
    return Estimate(files, tokens, fpt, rate, measured, False, faster, faster_seconds)
