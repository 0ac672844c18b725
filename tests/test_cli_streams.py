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
                          input=input, preexec_fn=closing, timeout=300)


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


# ---------------------------------------------------------------- 3. a write error on stdout
FULL = "Error: cannot write the results: No space left on device\n"


def test_a_full_disk_on_stdout_is_one_line(tmp_path: Path, minilm_path: Path) -> None:
    db = _small_index(tmp_path)
    for args in (["search", "otters", "--db", str(db), "--mode", "keyword", "-k", "3"],
                 ["embed", "hello", "-m", str(minilm_path)],
                 ["status", "--db", str(db)], ["--help"], ["--version"], ["search", "--help"],
                 ["models", "list"]):
        with open("/dev/full", "wb") as full:
            result = _cli(*args, stdout=full)
        assert (result.returncode, result.stderr.decode()) == (1, FULL), args


def _wrapped(code: str, *args: str, stdout: object) -> subprocess.CompletedProcess[bytes]:
    """``main()`` run after ``code`` (which may patch or add a command)."""
    script = f"import sys\n{code}\nsys.argv = ['gguf-embed', *sys.argv[1:]]\n" \
             "from gguf_embed.cli import main\nmain()\n"
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.run([sys.executable, "-c", script, *args], env=env, cwd=ROOT,
                          stdout=stdout, stderr=subprocess.PIPE, timeout=300)


def test_results_left_in_the_buffer_at_exit_are_reported_too() -> None:
    code = ("from gguf_embed.cli import cli\n"
            "@cli.command('unflushed')\n"
            "def unflushed() -> None:\n"
            "    sys.stdout.write('x' * 10)\n")
    with open("/dev/full", "wb") as full:
        result = _wrapped(code, "unflushed", stdout=full)
    assert (result.returncode, result.stderr.decode()) == (1, FULL)


def test_another_os_error_keeps_its_handling(tmp_path: Path) -> None:
    """An OSError that is not a write of the results is not reported as one, even with stdout
    a closed pipe."""
    db = _small_index(tmp_path)
    code = ("import errno\nfrom gguf_embed.index import Index\n"
            "def broken(*a, **k):\n"
            "    raise OSError(errno.EIO, 'Input/output error')\n"
            "Index.model_for = broken\n")
    read, write = os.pipe()
    os.close(read)
    try:
        result = _wrapped(code, "search", "otters", "--db", str(db), "--mode", "keyword",
                          stdout=write)
    finally:
        os.close(write)
    assert result.returncode == 1
    assert b"OSError: [Errno 5] Input/output error" in result.stderr
    assert b"cannot write" not in result.stderr


# ---------------------------------------------------------------- 4. a closed pipe, >&-
@pytest.mark.parametrize("args", [
    ["search", "otters", "--mode", "keyword", "-k", "1000", "--chunks"],
    ["status"],
    ["embed", "hello"],
    ["--version"],
])
def test_a_closed_pipe_ends_quietly_with_141(tmp_path: Path, minilm_path: Path,
                                             args: list[str]) -> None:
    db = _small_index(tmp_path)
    if args[0] == "embed":
        args = [*args, "-m", str(minilm_path)]
    elif args[0] != "--version":
        args = [*args, "--db", str(db)]
    read, write = os.pipe()
    os.close(read)  # the reader is gone before anything is written: every write is EPIPE
    try:
        result = _cli(*args, stdout=write)
    finally:
        os.close(write)
    assert (result.returncode, result.stderr) == (141, b"")


def test_search_with_stdout_closed_is_an_error(tmp_path: Path) -> None:
    db = _small_index(tmp_path)
    result = _cli("search", "otters", "--db", str(db), "--mode", "keyword", close=(1,),
                  stdout=None)
    assert (result.returncode, result.stderr.decode()) == (
        1, "Error: cannot write the results: stdout is closed\n")


# ---------------------------------------------------------------- 5. the rerank note, stdin
def test_stdin_search_with_rerank_notes_the_cut_passages(tmp_path: Path,
                                                         models_dir: Path) -> None:
    from gguf_embed.chunking import ChunkSettings

    docs = tmp_path / "docs"
    docs.mkdir()
    (docs / "long.md").write_text("otters archive " * 1500 + "\n")  # one chunk over 512 tokens
    (docs / "short.md").write_text("otters hold hands\n")
    db = tmp_path / "i.db"
    with Index(db, FakeEngine(max_tokens=8192),
               chunking=ChunkSettings(max_tokens=4000, overlap=0)) as index:
        index.add([docs])
    reranker = str(models_dir / "tiny-xlmr-reranker-f32.gguf")
    args = ["--db", str(db), "--mode", "keyword", "-k", "2", "--rerank", reranker]
    one = CliRunner().invoke(cli, ["search", "otters archive", *args])
    assert one.exit_code == 0, one.stderr
    assert "note: 1 of 2 reranked passages were cut to the reranker's context (512 tokens)" \
        in one.stderr
    many = CliRunner().invoke(cli, ["search", "-", *args],
                              input="otters archive\n\nhold hands otters\n")
    assert many.exit_code == 0, many.stderr
    assert len(many.stdout.splitlines()) == 3
    assert many.stderr == ("note: 2 of 4 reranked passages (over 2 queries) were cut to the "
                           "reranker's context (512 tokens)\n")


# ---------------------------------------------------------------- 6. inputs numbered from 0
def test_stdin_queries_are_named_by_their_line_from_0(tmp_path: Path, minilm: Engine,
                                                     minilm_path: Path) -> None:
    docs = tmp_path / "docs"
    docs.mkdir()
    (docs / "a.md").write_text("word games\n")
    db = tmp_path / "i.db"
    with Index(db, minilm) as index:
        index.add([docs])
    long = "word " * 1000
    args = ["search", "-", "--db", str(db), "-m", str(minilm_path), "-k", "1"]
    result = CliRunner().invoke(cli, args, input=f"short\n\n{long}\n")
    assert result.exit_code == 0, result.stderr
    assert result.stderr == ("warning: query 2 is longer than the model's context; only its "
                             "first 512 tokens were searched for\n")
    alone = CliRunner().invoke(cli, args, input=f"\n{long}\n")
    assert alone.exit_code == 0, alone.stderr
    assert alone.stderr.startswith("warning: query 1 is longer than the model's context")
    bad = CliRunner().invoke(cli, args, input=b"short\n\n\xff\n")
    assert bad.exit_code == 1 and bad.stderr.startswith("Error: query 2 is not valid UTF-8")


def test_an_empty_text_is_a_usage_error_as_argument_or_line(minilm_path: Path) -> None:
    for args, stdin, message in ((["a", ""], None, "input 1 is empty"),
                                 (["  "], None, "input 0 is empty"),
                                 ([], "a\n\nb\n", "input 1 is empty")):
        result = CliRunner().invoke(cli, ["embed", "-m", str(minilm_path), *args], input=stdin)
        assert result.exit_code == 2 and message in result.stderr, (args, result.stderr)


def test_a_closed_descriptor_is_held_so_no_file_takes_its_number() -> None:
    """With fd 2 closed, the next file opened would be fd 2, and llama.cpp's C-level stderr
    would write into it (a model, INDEX.bits): main() holds 0-2 on /dev/null first."""
    code = ("import os\nimport gguf_embed.cli as c\nc._hold_standard_descriptors()\n"
            "print(os.open(os.devnull, os.O_RDONLY), os.path.realpath('/proc/self/fd/2'))\n")
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    result = subprocess.run([sys.executable, "-c", code], env=env, cwd=ROOT,
                            stdout=subprocess.PIPE, preexec_fn=lambda: os.close(2),
                            timeout=60)
    fd, target = result.stdout.decode().split()
    assert int(fd) >= 3 and target == os.devnull
