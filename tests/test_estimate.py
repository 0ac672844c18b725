"""The time estimate `index` gives before a slow run on a CPU (gguf_embed.estimate), with a
fake engine and fake rates (no time is measured or asserted), and the CLI's message."""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest
from click.testing import CliRunner

from gguf_embed import estimate
from gguf_embed.cli import cli

# Qwen3-Embedding-4B's and -0.6B's GGUF headers (the keys the estimate reads)
QWEN3_4B = {"general.architecture": "qwen3", "qwen3.block_count": "36",
            "qwen3.embedding_length": "2560", "qwen3.feed_forward_length": "9728",
            "qwen3.attention.head_count": "32", "qwen3.attention.head_count_kv": "8",
            "qwen3.attention.key_length": "128"}
QWEN3_06B = {"general.architecture": "qwen3", "qwen3.block_count": "28",
             "qwen3.embedding_length": "1024", "qwen3.feed_forward_length": "3072",
             "qwen3.attention.head_count": "16", "qwen3.attention.head_count_kv": "8",
             "qwen3.attention.key_length": "128"}
MINILM = {"general.architecture": "bert", "bert.block_count": "6",
          "bert.embedding_length": "384", "bert.feed_forward_length": "1536",
          "bert.attention.head_count": "12"}


class FakeEngine:
    """Tokenizes one token per word; embeds nothing; records the calls."""

    def __init__(self, metadata: dict[str, str], name: str, gpu_layers: int = 0) -> None:
        self.metadata = metadata
        self.spec = SimpleNamespace(name=name)
        self.n_gpu_layers = gpu_layers
        self.n_threads = 2
        self.tokenized: list[str] = []

    def tokenize(self, text: str) -> np.ndarray:
        self.tokenized.append(text)
        return np.zeros(len(text.split()), dtype=np.int32)


def _files(folder: Path, count: int, words: int) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i in range(count):
        path = folder / f"doc{i}.md"
        path.write_text(" ".join(["word"] * words))  # 5 bytes per token, less the last space
        paths.append(path)
    return paths


def test_flops_per_token_come_from_the_header() -> None:
    # 4B: 36 layers × (q, o: 2560×4096; k, v: 2560×1024; gate, up, down: 2560×9728)
    per_layer = 2 * 2560 * 4096 + 2 * 2560 * 1024 + 3 * 2560 * 9728
    assert estimate.flops_per_token(QWEN3_4B) == 2 * 36 * per_layer
    # the catalog's faster choice is the same number the 0.6B header gives
    assert estimate.layer_weights(QWEN3_06B) == estimate.FASTER_MODELS["qwen3-embedding-0.6b"]
    # BERT: attention (4 × 384²) and a two-matrix FFN (2 × 384 × 1536) per layer
    assert estimate.layer_weights(MINILM) == 6 * (4 * 384 * 384 + 2 * 384 * 1536)
    assert estimate.flops_per_token({"general.architecture": "qwen3"}) == 0


def test_pending_tokens_skip_unchanged_files_and_sample_the_rest(tmp_path: Path) -> None:
    paths = _files(tmp_path / "docs", 30, 100)
    pdf = tmp_path / "docs" / "paper.pdf"
    pdf.write_bytes(b"%PDF-1.4" + b"x" * 1992)  # 2,000 bytes: 100 tokens at 20 bytes/token
    stat = paths[0].stat()
    known = {str(paths[0]): (1, "hash", stat.st_size, stat.st_mtime),  # unchanged: skipped
             str(paths[1]): (2, "hash", stat.st_size, stat.st_mtime - 10)}  # touched: counted
    engine = FakeEngine(QWEN3_4B, "qwen3-embedding-4b")
    files, tokens = estimate.pending_tokens(engine, [*paths, pdf], known)
    assert files == 30  # 29 text files and the PDF
    assert len(engine.tokenized) == estimate.SAMPLE_FILES  # the rest counted from their size
    assert tokens == 29 * 100 + 100
    files, tokens = estimate.pending_tokens(engine, paths[:3], {}, overlap_factor=1.5)
    assert (files, tokens) == (3, 450)
    # a file over the size limit is skipped by the indexer, so not counted either
    assert estimate.pending_tokens(engine, paths[:3], {}, max_file_bytes=10) == (0, 0)


def test_a_slow_cpu_run_is_measured_and_names_the_smaller_model(tmp_path: Path) -> None:
    paths = _files(tmp_path / "docs", 40, 1000)  # 40,000 tokens
    measured: list[Any] = []

    def rate(engine: Any) -> float:
        measured.append(engine)
        return 30.0  # tokens/s: about the 4B on two cores

    engine = FakeEngine(QWEN3_4B, "qwen3-embedding-4b")
    est = estimate.estimate_index(engine, paths, {}, measure=rate)
    assert measured == [engine] and est.measured
    assert est.tokens == 40_000 and est.files == 40
    assert est.slow and est.seconds == pytest.approx(40_000 / 30)
    assert est.faster == "qwen3-embedding-0.6b"
    ratio = estimate.flops_per_token(QWEN3_06B) / estimate.flops_per_token(QWEN3_4B)
    assert 0.1 < ratio < 0.15
    assert est.faster_seconds == pytest.approx(est.seconds * ratio)


def test_a_quick_run_is_not_measured(tmp_path: Path) -> None:
    paths = _files(tmp_path / "docs", 3, 100)

    def never(engine: Any) -> float:
        raise AssertionError("a run fast even at the optimistic rate needs no calibration")

    est = estimate.estimate_index(FakeEngine(QWEN3_4B, "qwen3-embedding-4b"), paths, {},
                                  measure=never)
    assert not est.measured and not est.slow and est.tokens == 300
    # the small model names no faster choice, however slow its run
    small = estimate.estimate_index(FakeEngine(QWEN3_06B, "qwen3-embedding-0.6b"),
                                    _files(tmp_path / "big", 40, 5000), {},
                                    measure=lambda e: 10.0)
    assert small.slow and small.measured and small.faster is None


def test_with_a_gpu_nothing_is_walked_or_measured(tmp_path: Path) -> None:
    paths = _files(tmp_path / "docs", 40, 1000)
    engine = FakeEngine(QWEN3_4B, "qwen3-embedding-4b", gpu_layers=99)
    est = estimate.estimate_index(engine, paths, {}, measure=lambda e: 1.0)
    assert est.gpu and not est.slow and not est.measured and engine.tokenized == []


def test_calibrate_times_one_packed_decode_on_the_real_engine(qwen: Any) -> None:
    rate = estimate.calibrate(qwen)
    assert rate > 0 and np.isfinite(rate)


@pytest.fixture()
def docs(tmp_path: Path, corpora: Path) -> Path:
    folder = tmp_path / "docs"
    folder.mkdir()
    for page in sorted((corpora / "tldr-linux" / "pages").glob("b*.md"))[:20]:
        shutil.copy(page, folder / page.name)
    return folder


def test_index_says_before_a_slow_run_how_long_and_what_is_faster(
        docs: Path, tmp_path: Path, qwen_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # the tiny model is fast: make the optimistic bound and the measured rate slow
    monkeypatch.setattr(estimate, "OPTIMISTIC_GFLOPS_PER_CORE", 1e-6)
    monkeypatch.setattr(estimate, "calibrate", lambda engine: 2.0)
    monkeypatch.setattr(estimate, "FASTER_MODELS", {"qwen3-embedding-0.6b": 1.0})
    result = CliRunner().invoke(cli, ["index", str(docs), "--db", str(tmp_path / "i.db"),
                                      "-m", str(qwen_path), "--json"])
    assert result.exit_code == 0, result.stderr
    note = [line for line in result.stderr.splitlines() if line.startswith("note:")]
    assert len(note) == 1 and "no GPU" in note[0] and "min" in note[0]
    assert "2 tokens/s" in note[0] and "--model qwen3-embedding-0.6b" in note[0]
    assert "20 files" in note[0]
    assert result.stdout.startswith("{")  # stdout is the summary only

    # a second run has nothing new to embed: no note
    again = CliRunner().invoke(cli, ["index", str(docs), "--db", str(tmp_path / "i.db"),
                                     "-m", str(qwen_path), "--json"])
    assert again.exit_code == 0 and "note:" not in again.stderr


def test_index_is_silent_when_the_run_is_quick(
        docs: Path, tmp_path: Path, qwen_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(estimate, "OPTIMISTIC_GFLOPS_PER_CORE", 1e-6)
    monkeypatch.setattr(estimate, "calibrate", lambda engine: 1e9)
    result = CliRunner().invoke(cli, ["index", str(docs), "--db", str(tmp_path / "i.db"),
                                      "-m", str(qwen_path)])
    assert result.exit_code == 0, result.stderr
    assert "note:" not in result.stderr
    assert os.path.exists(tmp_path / "i.db")


def test_a_fifo_swapped_in_after_the_walk_does_not_hang_the_estimate(tmp_path: Path) -> None:
    """The walk found a file; by the time the estimate samples it, it is a fifo: the sample
    skips it instead of waiting for a writer that never comes."""
    import threading

    paths = _files(tmp_path / "docs", 3, 100)
    paths[0].unlink()
    os.mkfifo(paths[0])
    engine = FakeEngine(QWEN3_4B, "qwen3-embedding-4b")
    outcome: list[Any] = []
    counting = threading.Thread(target=lambda: outcome.append(
        estimate.pending_tokens(engine, paths, {})), daemon=True)
    counting.start()
    counting.join(60)  # a generous bound on a call that makes no wait of its own
    hung = counting.is_alive()
    if hung:  # let the blocked open go on (a writer comes and goes), so nothing is left behind
        os.close(os.open(paths[0], os.O_WRONLY | os.O_NONBLOCK))
        counting.join(60)
    assert not hung, "the estimate blocked opening a fifo"
    assert outcome == [(2, 200)]
