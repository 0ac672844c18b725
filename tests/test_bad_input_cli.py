"""Hostile and careless input against the CLI: one-line errors (exit 1) instead of tracebacks,
nothing created or removed by a mistyped path, terminal escapes from files never reach the
terminal, and the smaller promises (stdin alignment, numbering, warnings, doctor, serve)."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import apsw
import httpx
import pytest
from click.testing import CliRunner, Result

from gguf_embed.cli import cli
from gguf_embed.index import Index
from gguf_embed.testing import FakeEngine

from .support.lines import line_with
from .test_bad_input import write_docs

MAIN = "from gguf_embed.cli import main; import sys; sys.argv[0] = 'gguf-embed'; main()"
ESC = "\x1b"


def run(*args: str, **kwargs: object) -> Result:
    return CliRunner().invoke(cli, list(args), **kwargs)  # type: ignore[arg-type]


def one_line_error(result: Result, *fragments: str, code: int = 1) -> None:
    assert result.exit_code == code, (result.exit_code, result.stderr, result.exception)
    assert result.exception is None or isinstance(result.exception, SystemExit), \
        result.exception
    assert result.stderr.startswith("Error: ") and result.stderr.count("\n") == 1, result.stderr
    for fragment in fragments:
        assert fragment in result.stderr, result.stderr


@pytest.fixture
def fake_db(tmp_path: Path) -> tuple[Path, Path]:
    """An index of a few files, with the fake embedder (keyword search needs no model)."""
    docs = write_docs(tmp_path / "docs", {
        "alpha.md": "alpha particles and alpha decay",
        "beta.md": "beta testing of the beta release",
        f"evil{ESC}]0;pwned\a.md": f"gamma rays {ESC}[2J{ESC}]0;owned\a cleared your screen",
    })
    db = tmp_path / "i.db"
    with Index(db, FakeEngine()) as index:
        index.add([docs])
    return db, docs


# ---------------------------------------------------------------- 1. a missing root
def test_missing_root_exits_1_removes_nothing_and_prune_missing_opts_in(
        tmp_path: Path, minilm_path: Path) -> None:
    docs = write_docs(tmp_path / "docs", {"a.md": "alpha", "b.md": "beta", "c.md": "gamma"})
    db = tmp_path / "i.db"
    assert run("index", str(docs), "--db", str(db), "-m", str(minilm_path)).exit_code == 0
    docs.rename(tmp_path / "moved")
    result = run("index", str(docs), "--db", str(db), "-m", str(minilm_path))
    one_line_error(result, "not found", "nothing was changed", "--prune-missing")
    status = json.loads(run("status", "--db", str(db), "--json").stdout)
    assert status["documents"] == 3
    pruned = run("index", str(docs), "--db", str(db), "-m", str(minilm_path), "--prune-missing",
                 "--json")
    assert pruned.exit_code == 0 and json.loads(pruned.stdout)["removed"] == 3


def test_mistyped_root_creates_no_index(tmp_path: Path, minilm_path: Path) -> None:
    db = tmp_path / "new" / "i.db"
    result = run("index", str(tmp_path / "dcos"), "--db", str(db), "-m", str(minilm_path))
    one_line_error(result, "dcos", "not found")
    assert not db.exists() and not db.parent.exists()


def test_db_under_a_regular_file(tmp_path: Path, minilm_path: Path) -> None:
    docs = write_docs(tmp_path / "docs", {"a.md": "alpha"})
    (tmp_path / "file").write_text("x")
    result = run("index", str(docs), "--db", str(tmp_path / "file" / "i.db"), "-m",
                 str(minilm_path))
    one_line_error(result, "is a file, not a folder")


def test_index_refuses_a_foreign_sqlite_file(tmp_path: Path, minilm_path: Path) -> None:
    docs = write_docs(tmp_path / "docs", {"a.md": "alpha"})
    db = tmp_path / "places.sqlite"
    conn = apsw.Connection(str(db))
    conn.execute("CREATE TABLE moz_places (id INTEGER PRIMARY KEY, url TEXT)")
    conn.close()
    result = run("index", str(docs), "--db", str(db), "-m", str(minilm_path))
    one_line_error(result, "not a gguf-embed index", "moz_places")
    conn = apsw.Connection(str(db))
    assert [r[0] for r in conn.execute("SELECT name FROM sqlite_master")] == ["moz_places"]
    conn.close()


# ---------------------------------------------------------------- 5. bytes that are not UTF-8
def test_non_utf8_arguments_are_one_line_errors(minilm_path: Path, fake_db: tuple) -> None:
    db, _ = fake_db
    one_line_error(run("embed", "-m", str(minilm_path), "ok", "caf\udce9"),
                   "input 1 is not valid UTF-8", "0xe9")
    one_line_error(run("search", "caf\udce9", "--db", str(db), "--mode", "keyword"),
                   "query is not valid UTF-8")
    one_line_error(run("search", "alpha", "--db", str(db), "--mode", "keyword", "--path",
                       "caf\udce9*"), "--path is not valid UTF-8")


def test_non_utf8_stdin_is_a_one_line_error(minilm_path: Path, fake_db: tuple) -> None:
    db, _ = fake_db
    one_line_error(run("embed", "-m", str(minilm_path), input=b"fine\ncaf\xe9\n"),
                   "input 1 is not valid UTF-8", "0xe9")
    one_line_error(run("search", "-", "--db", str(db), "--mode", "keyword",
                       input=b"alpha\n\xff\xfe\n"), "query 1 is not valid UTF-8")


def test_a_60000_character_path_glob(fake_db: tuple) -> None:
    db, _ = fake_db
    one_line_error(run("search", "alpha", "--db", str(db), "--mode", "keyword", "--path",
                       "*" + "a" * 60_000), "path filter (--path) is 60,001 characters")


# ---------------------------------------------------------------- 6. terminal escapes
def test_search_output_escapes_control_characters(fake_db: tuple) -> None:
    db, docs = fake_db
    human = run("search", "gamma rays", "--db", str(db), "--mode", "keyword", "-k", "1")
    assert human.exit_code == 0, human.stderr
    assert ESC not in human.stdout and "\a" not in human.stdout
    assert "\\x1b]0;pwned\\x07.md" in human.stdout and "\\x1b[2J" in human.stdout
    data = json.loads(run("search", "gamma rays", "--db", str(db), "--mode", "keyword",
                          "-k", "1", "--json").stdout)
    assert data[0]["path"] == str(docs / f"evil{ESC}]0;pwned\a.md")  # JSON: exact text
    assert f"{ESC}[2J" in data[0]["snippet"]


def test_index_summary_and_errors_escape_control_characters(tmp_path: Path,
                                                            minilm_path: Path) -> None:
    docs = write_docs(tmp_path / "docs", {"a.md": "alpha"})
    (docs / f"x{ESC}[31m.bin").write_bytes(b"\x00\x01binary")
    result = run("index", str(docs), "--db", str(tmp_path / "i.db"), "-m", str(minilm_path))
    assert result.exit_code == 0, result.stderr
    assert ESC not in result.stdout and "x\\x1b[31m.bin: binary" in result.stdout
    missing = run("status", "--db", str(tmp_path / f"no{ESC}[2J.db"))
    one_line_error(missing, "no\\x1b[2J.db")
    assert ESC not in missing.stderr


def test_non_utf8_file_names_are_shown_escaped(tmp_path: Path) -> None:
    docs = tmp_path / "docs"
    docs.mkdir()
    with open(os.path.join(os.fsencode(docs), b"caf\xe9.md"), "wb") as fh:
        fh.write(b"espresso")
    db = tmp_path / "i.db"
    with Index(db, FakeEngine()) as index:
        index.add([docs])
    result = run("search", "espresso", "--db", str(db), "--mode", "keyword")
    assert result.exit_code == 0, result.stderr
    assert "caf\\xe9.md:1-1" in result.stdout
    raw = json.loads(run("search", "espresso", "--db", str(db), "--mode", "keyword",
                         "--json").stdout)
    assert os.fsencode(raw[0]["path"]).endswith(b"caf\xe9.md")  # lossless in JSON


# ---------------------------------------------------------------- 7. the smaller ones
def test_search_stdin_answers_blank_lines_with_empty_arrays(fake_db: tuple) -> None:
    db, _ = fake_db
    result = run("search", "-", "--db", str(db), "--mode", "keyword", "-k", "1",
                 input="alpha\n\n   \nbeta\n")
    assert result.exit_code == 0, result.stderr
    answers = [json.loads(line) for line in result.stdout.splitlines()]
    assert len(answers) == 4 and answers[1] == answers[2] == []
    assert "alpha" in answers[0][0]["path"] and "beta" in answers[3][0]["path"]


def test_over_long_query_is_cut_and_said_so(tmp_path: Path, minilm, minilm_path: Path) -> None:
    db = tmp_path / "i.db"
    with Index(db, minilm) as index:
        index.add([write_docs(tmp_path / "docs", {"a.md": "word games", "b.md": "other"})])
    result = run("search", "word " * 1000, "--db", str(db), "-m", str(minilm_path), "-k", "1")
    assert result.exit_code == 0, result.stderr
    assert result.stderr.startswith("warning: the query is longer than the model's context")
    assert "512 tokens" in result.stderr and result.stdout


def test_inputs_are_numbered_alike_in_errors_and_warnings(minilm_path: Path) -> None:
    texts = ["short", "word " * 1000]
    warned = run("embed", "-m", str(minilm_path), "--truncate", *texts)
    failed = run("embed", "-m", str(minilm_path), *texts)
    assert warned.exit_code == 0 and "warning: input 1 was truncated" in warned.stderr
    one_line_error(failed, "input 1 has")


def test_empty_model_is_an_error(tmp_path: Path) -> None:
    result = run("embed", "-m", "", "x", env={"HF_HUB_OFFLINE": "1",
                                              "HF_HUB_CACHE": str(tmp_path)})
    assert result.exit_code == 2 and "--model" in result.stderr and "is empty" in result.stderr


def test_doctor_with_a_bad_model_still_reports_the_environment(tmp_path: Path) -> None:
    bad = tmp_path / "bad.gguf"
    bad.write_bytes(b"not a model at all")
    result = run("doctor", "-m", str(bad))
    assert result.exit_code == 1
    assert "llama_cpp_python:" in result.stdout and "sqlite:" in result.stdout
    assert result.stderr.startswith("Error: ") and "not a GGUF file" in result.stderr
    data = json.loads(run("doctor", "-m", str(bad), "--json").stdout)
    assert data["environment"]["llama_cpp_python"] and "not a GGUF" in data["model"]["error"]


def _with_pooling(qwen_path: Path, tmp_path: Path, pooling: int) -> Path:
    import gguf

    copy = tmp_path / "my-qwen3.gguf"
    shutil.copy(qwen_path, copy)
    reader = gguf.GGUFReader(copy, "r+")
    field = reader.fields["qwen3.pooling_type"]
    field.parts[field.data[0]][0] = pooling
    del reader
    return copy


def test_doctor_warns_on_a_qwen3_gguf_whose_pooling_says_none(
        tmp_path: Path, qwen_path: Path) -> None:
    copy = _with_pooling(qwen_path, tmp_path, 0)
    result = run("doctor", "-m", str(copy))
    assert "model warning:" in result.stdout and "'none'" in result.stdout, result.stdout
    assert "'last' pooling" in result.stdout
    data = json.loads(run("doctor", "-m", str(copy), "--json").stdout)
    assert "'none'" in data["model"]["warnings"][0]
    plain = json.loads(run("doctor", "-m", str(qwen_path), "--json").stdout)
    assert plain["model"]["warnings"] == []


def test_doctor_refuses_a_qwen3_gguf_whose_pooling_says_rank_without_its_head(
        tmp_path: Path, qwen_path: Path) -> None:
    """Rank pooling marks a reranker: doctor checks it as one, and one without the yes/no head
    it needs fails (exit 1), saying why, after the environment report."""
    copy = _with_pooling(qwen_path, tmp_path, 4)
    result = run("doctor", "-m", str(copy))
    assert result.exit_code == 1
    assert "python:" in result.stdout
    assert "FAILED" in result.stdout and "no yes/no head" in result.stdout, result.stdout
    data = json.loads(run("doctor", "-m", str(copy), "--json").stdout)
    assert data["self_test"]["ok"] is False and "head" in data["self_test"]["error"]


def test_serve_on_a_taken_port_fails_before_announcing(minilm_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = run("serve", "-m", str(minilm_path), "--port", str(port))
    one_line_error(result, f"cannot listen on 127.0.0.1:{port}")
    assert "serving" not in result.stderr


def test_serve_port_0_announces_the_real_port_and_no_file_path(minilm_path: Path,
                                                               models_dir: Path) -> None:
    reranker = models_dir / "tiny-xlmr-reranker-f32.gguf"
    proc = subprocess.Popen([sys.executable, "-c", MAIN, "serve", "-m", str(minilm_path),
                             "--port", "0", "--reranker", str(reranker)],
                            stderr=subprocess.PIPE, text=True)
    try:
        line = line_with(proc, "serving", 120)
        url = line.split(" on ")[1].split()[0]
        port = int(url.rsplit(":", 1)[1].split("/")[0])
        assert port != 0
        deadline = time.monotonic() + 30
        while True:
            try:
                health = httpx.get(f"http://127.0.0.1:{port}/health", timeout=5)
                break
            except httpx.TransportError:
                assert time.monotonic() < deadline
                time.sleep(0.1)
        assert health.status_code == 200
        assert str(models_dir) not in line  # the announcement names models, not files
        ranked = httpx.post(f"http://127.0.0.1:{port}/v1/rerank",
                            json={"query": "q", "documents": ["a", "b"]}).json()
        assert ranked["model"] and str(models_dir) not in json.dumps(ranked)
        assert httpx.post(f"http://127.0.0.1:{port}/v1/rerank", json={
            "query": "q", "documents": ["a"], "model": ranked["model"]}).status_code == 200
        models = httpx.get(f"http://127.0.0.1:{port}/v1/models").json()
        served = models["data"][0]["id"]
        assert "/" not in served and str(minilm_path.parent) not in json.dumps(models)
        assert str(minilm_path.parent) not in health.text
        embedded = httpx.post(f"http://127.0.0.1:{port}/v1/embeddings",
                              json={"input": "x", "model": served})
        assert embedded.status_code == 200
    finally:
        proc.terminate()
        proc.wait(timeout=30)
