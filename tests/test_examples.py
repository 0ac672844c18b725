"""The runnable examples under examples/ run, with the MiniLM test model."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def _run(*args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.run([sys.executable, str(ROOT / "examples" / "desktop_app.py"), *args],
                          capture_output=True, text=True, env=env, timeout=600)


def test_desktop_app_example_indexes_searches_and_cancels(tmp_path: Path,
                                                          minilm_path: Path) -> None:
    docs = tmp_path / "notes"
    docs.mkdir()
    for i in range(256):  # four batches of one-chunk files
        (docs / f"note{i:03d}.md").write_text(f"# Note {i}\n\nShopping list number {i}: "
                                              f"apples, pears and item {i * 7}.\n")
    (docs / "logs.md").write_text("# Logs\n\nRotate log files weekly with logrotate; "
                                  "compress old logs.\n")
    db = tmp_path / "app.db"
    first = _run(str(docs), "rotate old log files", "--model", str(minilm_path), "--db",
                 str(db), "--cancel-after", "1")
    assert first.returncode == 0, first.stderr
    assert "progress: " in first.stdout and "cancelled: " in first.stdout, first.stdout

    second = _run(str(docs), "rotate old log files", "--model", str(minilm_path), "--db",
                  str(db))
    assert second.returncode == 0, second.stderr
    lines = second.stdout.splitlines()
    done = next(line for line in lines if line.startswith("done: "))
    assert "unchanged" in done and not done.endswith(" 0 unchanged")  # went on from run one
    assert "logs.md" in lines[-3], lines[-3:]  # the best hit of the final search
