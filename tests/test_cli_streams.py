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
