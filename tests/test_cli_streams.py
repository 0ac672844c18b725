"""The CLI's standard streams: stdin lines split at newlines only, a closed stderr or stdout,
a full disk or a closed pipe on stdout (one line or a quiet exit 141, never a traceback)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from gguf_embed import Engine, Index
from gguf_embed.cli import cli
from gguf_embed.testing import FakeEngine

ROOT = Path(__file__).resolve().parent.parent


def _small_index(tmp_path: Path, files: int = 3) -> Path:
    docs = tmp_path / "docs"
    docs.mkdir()
    for i in range(files):
        (docs / f"f{i}.md").write_text(f"# Otters {i}\n\nOtters hold hands while they sleep.\n")
    db = tmp_path / "i.db"
    with Index(db, FakeEngine()) as index:
        index.add([docs])
    return db


# ---------------------------------------------------------------- 1. stdin lines: \n only
def test_search_stdin_splits_lines_at_newline_only(tmp_path: Path) -> None:
    db = _small_index(tmp_path)
    # a lone \r, a form feed and U+2028 stay in their query; a CRLF line loses its \r
    data = "otters\rhands\r\nsleep\x0cotters\u2028x\n\nhands\r\n".encode()
    result = CliRunner().invoke(cli, ["search", "-", "--db", str(db), "--mode", "keyword",
                                      "-k", "1"], input=data)
    assert result.exit_code == 0, result.stderr
    rows = [json.loads(line) for line in result.stdout.splitlines()]
    assert len(rows) == 4
    assert [len(r) for r in rows] == [1, 1, 0, 1]


def test_embed_stdin_splits_lines_at_newline_only(minilm_path: Path, minilm: Engine) -> None:
    data = "alpha\rbeta\r\ngamma\u2028delta\x1cx\n".encode()
    result = CliRunner().invoke(cli, ["embed", "-m", str(minilm_path)], input=data)
    assert result.exit_code == 0, result.stderr
    rows = [json.loads(line) for line in result.stdout.splitlines()]
    assert len(rows) == 2
    np.testing.assert_allclose(np.array(rows),
                               minilm.embed(["alpha\rbeta", "gamma\u2028delta\x1cx"]),
                               atol=1e-6)


# ---------------------------------------------------------------- 2. stderr closed (2>&-)
def _cli(*args: str, close: tuple[int, ...] = (), stdout: object = subprocess.PIPE,
         input: bytes | None = None) -> subprocess.CompletedProcess[bytes]:
    """``python -m gguf_embed ARGS`` in a child whose descriptors ``close`` are closed before
    Python starts (as ``2>&-`` does: Python then sets sys.stderr to None)."""
    def closing() -> None:
        for fd in close:
            os.close(fd)

    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.run([sys.executable, "-m", "gguf_embed", *args], env=env, cwd=ROOT,
                          stdout=stdout, stderr=None if 2 in close else subprocess.PIPE,
                          input=input, preexec_fn=closing, timeout=300)  # noqa: PLW1509


def test_commands_that_load_a_model_work_with_stderr_closed(tmp_path: Path,
                                                            minilm_path: Path) -> None:
    embedded = _cli("embed", "hello", "-m", str(minilm_path), close=(2,))
    assert embedded.returncode == 0
    assert len(json.loads(embedded.stdout)) == 384
    docs = tmp_path / "docs"
    docs.mkdir()
    (docs / "a.md").write_text("# Otters\n\nOtters hold hands while they sleep.\n")
    db = tmp_path / "m.db"
    indexed = _cli("index", str(docs), "--db", str(db), "-m", str(minilm_path), close=(2,))
    assert indexed.returncode == 0
    found = _cli("search", "sleeping otters", "--db", str(db), "--json", close=(2,))
    assert found.returncode == 0
    assert [Path(r["path"]).name for r in json.loads(found.stdout)] == ["a.md"]
    verbose = _cli("-v", "embed", "hi", "-m", str(minilm_path), close=(2,))
    assert verbose.returncode == 0 and len(json.loads(verbose.stdout)) == 384
