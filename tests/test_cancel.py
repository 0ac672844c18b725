"""Cancelling an index run: from a thread through an Event, and Ctrl-C in the CLI."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from gguf_embed import Index
from gguf_embed.indexer import BATCH_CHUNKS
from gguf_embed.testing import FakeEngine

ROOT = Path(__file__).resolve().parent.parent


WORDS = ["river", "stone", "light", "garden", "engine", "paper", "window", "cloud", "music",
         "field"]


def _docs(folder: Path, n: int, words: int = 20) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(n):
        body = " ".join(WORDS[(i * j + j) % len(WORDS)] for j in range(words))
        (folder / f"note{i:03d}.txt").write_text(f"note {i}: {body}\n")
    return folder


def test_cancel_stops_at_a_batch_boundary_and_the_next_run_continues(tmp_path: Path) -> None:
    docs = _docs(tmp_path / "docs", 3 * BATCH_CHUNKS)  # one chunk each: three batches
    cancel = threading.Event()
    engine = FakeEngine()
    with Index(tmp_path / "index.db", engine) as index:
        summary = index.add([docs], cancel=cancel, progress=lambda p: cancel.set())
        assert summary.cancelled and summary.to_dict()["cancelled"] is True
        assert summary.added == BATCH_CHUNKS  # the first batch, whole, and nothing more
        assert index.status()["documents"] == BATCH_CHUNKS
        assert index.status()["last_run"]["summary"]["cancelled"] is True
        assert len(engine.calls) == 1  # the next batch was never embedded

        again = index.add([docs])
        assert not again.cancelled
        assert again.added == 2 * BATCH_CHUNKS and again.unchanged == BATCH_CHUNKS
        assert index.status()["documents"] == 3 * BATCH_CHUNKS
        assert index.status()["chunks"] == 3 * BATCH_CHUNKS  # no duplicates


def test_cancel_before_start_writes_nothing_and_removes_nothing(tmp_path: Path) -> None:
    docs = _docs(tmp_path / "docs", 5)
    with Index(tmp_path / "index.db", FakeEngine()) as index:
        index.add([docs])
        (docs / "note000.txt").unlink()
        cancel = threading.Event()
        cancel.set()
        summary = index.add([docs], cancel=cancel)
        assert summary.cancelled and summary.removed == 0 and summary.added == 0
        assert index.status()["documents"] == 5  # the deletion waits for a whole run
        assert index.add([docs]).removed == 1


@pytest.mark.skipif(sys.platform == "win32", reason="POSIX signals")
def test_ctrl_c_in_cli_index_stops_cleanly_with_130(tmp_path: Path, minilm_path: Path) -> None:
    total = 4 * BATCH_CHUNKS
    docs = _docs(tmp_path / "docs", total, words=40)
    db = tmp_path / "index.db"
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    command = [sys.executable, "-c", "from gguf_embed.cli import main; main()", "index",
               str(docs), "--db", str(db), "-m", str(minilm_path), "--progress", "--json"]
    proc = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env,
                            cwd=tmp_path)
    assert proc.stderr is not None
    seen = b""
    while b"chunks" not in seen:  # the first progress report: a batch is committed
        byte = proc.stderr.read(1)
        assert byte, "the run ended before any progress"
        seen += byte
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=300)
    err_text = (seen + err).decode()
    assert proc.returncode == 130, err_text
    lines = [line for line in err_text.replace("\r", "\n").splitlines()
             if line.strip() and not re.search(r"\d+/\d+ \[", line)]  # the tqdm bar
    assert len(lines) == 1 and lines[0].startswith("interrupted:"), lines
    assert "Traceback" not in err_text
    summary = json.loads(out)
    assert summary["cancelled"] is True and 0 < summary["added"] < total

    rerun = subprocess.run([*command[:-2], "--json"], capture_output=True, env=env,
                           cwd=tmp_path, timeout=600)
    assert rerun.returncode == 0, rerun.stderr.decode()
    second = json.loads(rerun.stdout)
    assert second["unchanged"] == summary["added"]
    assert second["added"] == total - summary["added"]
