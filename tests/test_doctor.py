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


def test_shipped_reference_of_the_original_model(models_dir: Path, qwen_path: Path,
                                                 tmp_path: Path) -> None:
    """A GGUF under a catalog model's file name is checked against the vectors that
    sentence-transformers made from the original weights, with a bound set by its quantization."""
    runner = CliRunner()
    for source, bound in (("all-minilm-l6-v2-q8_0.gguf", 0.995),
                          ("all-minilm-l6-v2-f16.gguf", 0.999)):
        link = tmp_path / source / "all-MiniLM-L6-v2-Q8_0.gguf"  # the catalog's file name
        link.parent.mkdir()
        link.symlink_to(models_dir / source)
        result = runner.invoke(cli, ["doctor", "-m", str(link), "--json"])
        assert result.exit_code == 0, result.stdout
        test = json.loads(result.stdout)["self_test"]
        assert test["reference"].endswith("references/all-minilm-l6-v2.json")
        assert test["reference_kind"] == "original model"
        assert test["reference_source"].startswith("sentence-transformers/all-MiniLM-L6-v2")
        assert test["required_cosine"] == bound and test["min_cosine"] >= bound

    shipped = json.loads(Path(test["reference"]).read_text())
    rng = np.random.default_rng(1)
    shipped["vectors"] = (np.array(shipped["vectors"]) + rng.normal(0, 0.1, (3, 384))).tolist()
    (tmp_path / "moved.json").write_text(json.dumps(shipped))
    drift = runner.invoke(cli, ["doctor", "-m", str(link), "--reference",
                                str(tmp_path / "moved.json"), "--json"])
    assert drift.exit_code == 1 and json.loads(drift.stdout)["self_test"]["min_cosine"] < 0.999

    impostor = tmp_path / "impostor" / "all-MiniLM-L6-v2-Q8_0.gguf"
    impostor.parent.mkdir()
    impostor.symlink_to(qwen_path)
    wrong = runner.invoke(cli, ["doctor", "-m", str(impostor)])
    assert wrong.exit_code == 1 and "384 dimensions, the model 256" in wrong.stdout

    (tmp_path / "broken.json").write_text("{not json")
    broken = runner.invoke(cli, ["doctor", "-m", str(link), "--reference",
                                 str(tmp_path / "broken.json")])
    assert broken.exit_code == 1 and "cannot read the reference" in broken.stdout


def test_quantization_sets_the_bound() -> None:
    from types import SimpleNamespace

    from gguf_embed.doctor import min_cosine_for

    def bound(file_type: str) -> float:
        return min_cosine_for(SimpleNamespace(metadata={"general.file_type": file_type}))

    assert bound("0") == bound("1") == bound("32") == 0.999
    assert bound("7") == 0.995 and bound("18") == 0.99 and bound("15") == 0.98
    assert bound("24") == 0.95  # 1-bit and other unlisted types: a looser sanity bound
