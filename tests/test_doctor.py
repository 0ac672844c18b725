"""gguf-embed doctor: environment report and the vector self-test against a reference."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from click.testing import CliRunner

from gguf_embed.cli import cli


def test_reference_round_trip_and_tampering(qwen_path: Path, minilm_path: Path,
                                            tmp_path: Path) -> None:
    runner = CliRunner()
    ref = tmp_path / "tiny.reference.json"
    made = runner.invoke(cli, ["doctor", "-m", str(qwen_path), "--reference", str(ref),
                               "--write-reference", "--json"])
    assert made.exit_code == 0, made.stderr
    report = json.loads(made.stdout)
    env = report["environment"]
    assert env["extensions_load"] and env["fts5"] and env["sqlite_vec"].startswith("v")
    assert env["devices"] and env["devices"][0]["name"]
    assert report["model"]["architecture"] == "qwen3" and report["model"]["dims"] == 256
    assert report["self_test"]["ok"] and report["self_test"]["min_cosine"] >= 0.999

    data = json.loads(ref.read_text())
    rng = np.random.default_rng(0)
    data["vectors"] = (np.array(data["vectors"]) + rng.normal(0, 0.2, (3, 256))).tolist()
    ref.write_text(json.dumps(data))
    bad = runner.invoke(cli, ["doctor", "-m", str(qwen_path), "--reference", str(ref)])
    assert bad.exit_code == 1 and "self-test:               FAILED" in bad.stdout

    other = runner.invoke(cli, ["doctor", "-m", str(minilm_path), "--reference", str(ref),
                                "--json"])
    assert other.exit_code == 1
    assert json.loads(other.stdout)["self_test"]["reference_error"].startswith("the reference")


def test_without_reference_checks_sanity(minilm_path: Path, tmp_path: Path) -> None:
    result = CliRunner().invoke(cli, ["doctor", "-m", str(minilm_path), "--reference",
                                      str(tmp_path / "none.json")])
    assert result.exit_code == 0
    assert "no reference vectors" in result.stdout and "extensions_load:" in result.stdout
