"""CLI defects a hostile probe found: ``embed -``, a closed stderr, ``index --reindex``
without ``-m``, escapes in --path errors, an ignored SIGINT, a deleted current folder, empty
option values, and messages that did not name the option to change."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from click.testing import CliRunner

from gguf_embed import Engine
from gguf_embed.cli import cli

ROOT = Path(__file__).resolve().parent.parent


# ---------------------------------------------------------------- 1. embed - reads stdin
def test_embed_dash_reads_stdin_like_no_text(minilm_path: Path, minilm: Engine) -> None:
    runner = CliRunner()
    for args in (["-"], ["--", "-"], []):
        result = runner.invoke(cli, ["embed", "-m", str(minilm_path), *args],
                               input="alpha\nbeta\n")
        assert result.exit_code == 0, (args, result.stderr)
        rows = [json.loads(line) for line in result.stdout.splitlines()]
        np.testing.assert_allclose(np.array(rows), minilm.embed(["alpha", "beta"]), atol=1e-6)
    as_json = runner.invoke(cli, ["embed", "-", "--json", "-m", str(minilm_path)],
                            input="alpha\nbeta\n")
    assert as_json.exit_code == 0 and len(json.loads(as_json.stdout)) == 2
    blank = runner.invoke(cli, ["embed", "-", "-m", str(minilm_path)], input="a\n\nb\n")
    assert blank.exit_code == 2 and "input 1 is empty; give one non-empty text per line" \
        in blank.stderr


def test_embed_dash_among_texts_is_a_usage_error(minilm_path: Path) -> None:
    result = CliRunner().invoke(cli, ["embed", "a", "-", "-m", str(minilm_path)], input="x\n")
    assert result.exit_code == 2 and "input 1 is '-', which reads stdin" in result.stderr
    assert result.stdout == ""
