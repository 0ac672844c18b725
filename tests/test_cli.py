"""The CLI: stdout carries results only, errors are one line on stderr with exit code 1."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from gguf_embed import Engine
from gguf_embed.cli import cli

from .fakehub import FakeHub


@pytest.fixture
def runner() -> CliRunner:
    return CliRunner()


def test_embed_arguments_json(runner: CliRunner, qwen_path: Path, qwen: Engine) -> None:
    result = runner.invoke(cli, ["embed", "-m", str(qwen_path), "--json", "alpha", "beta gamma"])
    assert result.exit_code == 0, result.stderr
    assert result.stderr == ""
    vectors = np.array(json.loads(result.stdout), dtype=np.float32)
    np.testing.assert_allclose(vectors, qwen.embed(["alpha", "beta gamma"]), atol=1e-6)


def test_embed_stdin_lines_in_order(runner: CliRunner, minilm_path: Path, minilm: Engine) -> None:
    lines = ["first line", "second", "third one here"]
    result = runner.invoke(cli, ["embed", "-m", str(minilm_path), "-d", "64"],
                           input="\n".join(lines) + "\n")
    assert result.exit_code == 0, result.stderr
    rows = [json.loads(line) for line in result.stdout.splitlines()]
    assert len(rows) == 3 and all(len(r) == 64 for r in rows)
    np.testing.assert_allclose(np.array(rows), minilm.embed(lines, dimensions=64), atol=1e-6)


def test_embed_query_flag(runner: CliRunner, qwen_path: Path, qwen: Engine) -> None:
    result = runner.invoke(cli, ["embed", "-m", str(qwen_path), "--query", "--json", "find"])
    assert result.exit_code == 0
    np.testing.assert_allclose(json.loads(result.stdout), qwen.embed(["find"], query=True),
                               atol=1e-6)


def test_model_from_environment(runner: CliRunner, minilm_path: Path) -> None:
    result = runner.invoke(cli, ["embed", "--json", "x"],
                           env={"GGUF_EMBED_MODEL": str(minilm_path)})
    assert result.exit_code == 0 and len(json.loads(result.stdout)[0]) == 384


def test_too_long_is_one_line_error(runner: CliRunner, minilm_path: Path) -> None:
    result = runner.invoke(cli, ["embed", "-m", str(minilm_path), "word " * 3000])
    assert result.exit_code == 1
    assert result.stdout == ""
    assert result.stderr.startswith("Error: input 0 has") and result.stderr.count("\n") == 1


def test_truncate_reports_on_stderr(runner: CliRunner, minilm_path: Path) -> None:
    result = runner.invoke(cli, ["embed", "-m", str(minilm_path), "--truncate", "word " * 3000])
    assert result.exit_code == 0
    assert "truncated to 512 tokens" in result.stderr
    assert len(json.loads(result.stdout)) == 384


@pytest.mark.parametrize("args,message", [
    (["embed", "-m", "no-such-model", "x"], "unknown model 'no-such-model'"),
    (["embed", "-m", "/nonexistent/m.gguf", "x"], "model file not found"),
    (["embed", "--offline", "x"], "not in the Hugging Face cache"),
])
def test_model_errors(runner: CliRunner, args: list[str], message: str, tmp_path: Path) -> None:
    result = runner.invoke(cli, args, env={"HF_HUB_CACHE": str(tmp_path)})
    assert result.exit_code == 1
    assert message in result.stderr and result.stdout == ""


def test_hf_hub_offline_is_honoured(runner: CliRunner, tmp_path: Path) -> None:
    with FakeHub() as hub:  # would serve nothing; it must not even be asked
        result = runner.invoke(cli, ["embed", "-m", "test/x-GGUF:x.gguf", "x", "--hf-endpoint",
                                     hub.url], env={"HF_HUB_OFFLINE": "1",
                                                    "HF_HUB_CACHE": str(tmp_path)})
        assert hub.requests == []
    assert result.exit_code == 1 and "downloads are off (offline)" in result.stderr


def test_empty_stdin_line_is_a_usage_error(runner: CliRunner, minilm_path: Path) -> None:
    result = runner.invoke(cli, ["embed", "-m", str(minilm_path)], input="a\n\nb\n")
    assert result.exit_code == 2 and "input 1 is empty" in result.stderr


def test_models_list(runner: CliRunner) -> None:
    result = runner.invoke(cli, ["models", "list"])
    assert result.exit_code == 0
    assert result.stdout.startswith("* qwen3-embedding-4b")
    data = json.loads(runner.invoke(cli, ["models", "list", "--json"]).stdout)
    assert {row["name"] for row in data} >= {"qwen3-embedding-4b", "all-minilm-l6-v2"}
    assert [row["name"] for row in data if row["default"]] == ["qwen3-embedding-4b"]


def test_models_pull_and_path(runner: CliRunner, qwen_path: Path, tmp_path: Path) -> None:
    commit = "f" * 40
    ref = f"test/tiny-GGUF:tiny-qwen3-q8_0.gguf@{commit}"
    env = {"HF_HUB_CACHE": str(tmp_path)}
    missing = runner.invoke(cli, ["models", "path", ref], env=env)
    assert missing.exit_code == 1 and "not in the Hugging Face cache" in missing.stderr
    with FakeHub(commit=commit) as hub:
        hub.add("test/tiny-GGUF", "tiny-qwen3-q8_0.gguf", qwen_path.parent / "tiny-qwen3-q8_0.gguf")
        pulled = runner.invoke(cli, ["models", "pull", ref, "--hf-endpoint", hub.url], env=env)
    assert pulled.exit_code == 0, pulled.stderr
    path = Path(pulled.stdout.strip())
    assert path.exists() and str(path).startswith(str(tmp_path))
    found = runner.invoke(cli, ["models", "path", ref], env=env)
    assert found.exit_code == 0 and Path(found.stdout.strip()) == path
