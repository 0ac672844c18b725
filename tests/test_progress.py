"""`index` progress: a tqdm bar on stderr when asked (or on a terminal), nothing otherwise;
stdout carries the summary only."""

from __future__ import annotations

import json
from pathlib import Path

from click.testing import CliRunner

from gguf_embed.cli import cli


def test_progress_goes_to_stderr_only_when_asked(tmp_path: Path, minilm_path: Path,
                                                 corpora: Path) -> None:
    docs = tmp_path / "docs"
    docs.mkdir()
    for page in sorted((corpora / "tldr-linux" / "pages").glob("g*.md"))[:12]:
        (docs / page.name).write_text(page.read_text())
    base = ["index", str(docs), "--model", str(minilm_path), "--json"]
    shown = CliRunner().invoke(cli, [*base, "--db", str(tmp_path / "a.db"), "--progress"])
    assert shown.exit_code == 0, shown.output
    assert json.loads(shown.stdout)["added"] == 12  # stdout: the summary, nothing else
    last = shown.stderr.replace("\r", "\n").strip().splitlines()[-1]
    assert "12/12" in last and "file" in last and "chunks" in last and "tok/s" in last, last
    assert shown.stderr.endswith("\n")  # the bar's line is finished before anything else
    quiet = CliRunner().invoke(cli, [*base, "--db", str(tmp_path / "b.db")])  # not a TTY
    assert quiet.exit_code == 0 and quiet.stderr == ""
