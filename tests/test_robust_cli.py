"""The CLI at its edges (issue 18): out-of-range options are usage errors, refused commands
leave no file, a FIFO --db never hangs, a full disk is one line, a newer index is refused with
both versions, Ctrl-C is exit 130 for every command."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import apsw
import pytest
from click.testing import CliRunner

from gguf_embed.cli import cli
from gguf_embed.cli._base import model_options
from gguf_embed.index import Index
from gguf_embed.store import SCHEMA_VERSION, Store
from gguf_embed.testing import FakeEngine

from .support.lines import Lines, line_with

ROOT = Path(__file__).resolve().parent.parent
MAIN = "from gguf_embed.cli import main; import sys; sys.argv[0] = 'gguf-embed'; main()"
ENV = {**os.environ, "PYTHONPATH": str(ROOT), "HF_HUB_OFFLINE": "1"}


@pytest.fixture()
def docs(tmp_path: Path) -> Path:
    root = tmp_path / "docs"
    root.mkdir()
    for i in range(3):
        (root / f"page{i}.md").write_text(f"# Page {i}\n\nOtters and badgers, part {i}.\n")
    return root


def gguf(*args: str, timeout: float = 120, **kw: object) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-c", MAIN, *args], capture_output=True, text=True,
                          timeout=timeout, env=ENV, **kw)  # type: ignore[call-overload]


# ---------------------------------------------------------------- option ranges: exit 2
BAD_OPTIONS = [
    (["index", "DOCS", "-d", "0"], "--dimensions"),
    (["index", "DOCS", "-d", "-3"], "--dimensions"),
    (["index", "DOCS", "-d", "100000000"], "--dimensions"),
    (["index", "DOCS", "--max-file-size", "-1"], "--max-file-size"),
    (["index", "DOCS", "--max-file-size", "0"], "--max-file-size"),
    (["index", "DOCS", "--max-file-size", "nan"], "--max-file-size"),
    (["index", "DOCS", "--max-file-size", "1e303"], "--max-file-size"),
    (["index", "DOCS", "--chunk-tokens", "0"], "--chunk-tokens"),
    (["index", "DOCS", "--chunk-overlap", "-1"], "--chunk-overlap"),
    (["index", "DOCS", "--chunk-tokens", "100", "--chunk-overlap", "100"], "--chunk-overlap"),
    (["index", "DOCS", "--chunk-tokens", "100", "--chunk-overlap", "500"], "--chunk-overlap"),
    (["index", "DOCS", "--ray-actors", "0"], "--ray-actors"),
    (["index", "DOCS", "--ray-cpus", "0"], "--ray-cpus"),
    (["search", "otters", "-k", "0"], "-k"),
    (["search", "otters", "-k", "100000"], "-k"),
    (["search", "otters", "--rerank-candidates", "0"], "--rerank-candidates"),
    (["serve", "--port", "70000"], "--port"),
    (["serve", "--port", "-1"], "--port"),
    (["serve", "--batch-window", "-1"], "--batch-window"),
    (["serve", "--batch-window", "nan"], "--batch-window"),
    (["serve", "--unload-after", "0"], "--unload-after"),
    (["serve", "--unload-after", "inf"], "--unload-after"),
    (["serve", "--unload-after", "1e300"], "--unload-after"),
    (["mcp", "--port", "65536"], "--port"),
    (["mcp", "--unload-after", "-1"], "--unload-after"),
    (["watch", "DOCS", "--max-file-size", "-0.5"], "--max-file-size"),
    (["watch", "DOCS", "--unload-after", "nan"], "--unload-after"),
    (["embed", "hello", "-d", "0"], "--dimensions"),
]


@pytest.mark.parametrize(("args", "option"), BAD_OPTIONS,
                         ids=[" ".join(a[:1] + a[2:]) for a, _ in BAD_OPTIONS])
def test_an_out_of_range_option_is_a_usage_error(tmp_path: Path, docs: Path, args: list[str],
                                                 option: str) -> None:
    db = tmp_path / "new.db"
    argv = [str(docs) if a == "DOCS" else a for a in args] + ["--db", str(db)] \
        if args[0] != "embed" else args
    result = CliRunner().invoke(cli, argv)
    assert result.exit_code == 2, (result.exit_code, result.stderr)
    assert option in result.stderr and "Usage:" in result.stderr
    assert not db.exists() and not list(tmp_path.glob("new.db*"))


@pytest.mark.parametrize(("args", "option"), [
    (["-d", "100000"], "--dimensions"),
    (["--chunk-tokens", "1000000"], "--chunk-tokens"),
])
def test_an_option_over_the_models_range_is_a_usage_error(tmp_path: Path, docs: Path,
                                                          qwen_path: Path, args: list[str],
                                                          option: str) -> None:
    db = tmp_path / "sub" / "new.db"
    result = CliRunner().invoke(cli, ["index", str(docs), "--db", str(db), "-m",
                                      str(qwen_path), *args])
    assert result.exit_code == 2, result.stderr
    assert option in result.stderr and "Usage:" in result.stderr
    assert not (tmp_path / "sub").exists()  # refused: no file, no folder


def test_embed_dimensions_over_the_models_range_is_a_usage_error(qwen_path: Path) -> None:
    result = CliRunner().invoke(cli, ["embed", "hello", "-m", str(qwen_path), "-d", "100000"])
    assert result.exit_code == 2 and "--dimensions" in result.stderr, result.stderr


# ---------------------------------------------------------------- refused commands leave no file
def _shard(path: Path, dims: int, docs: Path) -> Path:
    with Index(path, FakeEngine(dims=dims)) as index:
        index.add([docs])
    return path


@pytest.mark.parametrize("bad", ["mismatch", "junk", "fifo", "future"])
def test_a_failed_merge_leaves_no_output_file(tmp_path: Path, docs: Path, bad: str) -> None:
    good = _shard(tmp_path / "a.db", 64, docs)
    shard = tmp_path / "b.db"
    if bad == "mismatch":
        _shard(shard, 32, docs)
    elif bad == "junk":
        shard.write_text("not an index\n" * 50)
    elif bad == "fifo":
        os.mkfifo(shard)
    else:
        _shard(shard, 64, docs)
        conn = apsw.Connection(str(shard))
        conn.execute("INSERT INTO migrations(name, applied_at) VALUES ('0099_future', 0)")
        conn.close()
    out = tmp_path / "out" / "merged.db"
    result = gguf("merge", str(out), str(good), str(shard), timeout=60)
    assert result.returncode == 1, result.stderr
    assert result.stderr.startswith("Error: ") and result.stderr.count("\n") == 1
    assert not (tmp_path / "out").exists()


def test_a_merge_naming_a_missing_shard_leaves_no_output_file(tmp_path: Path,
                                                              docs: Path) -> None:
    good = _shard(tmp_path / "a.db", 64, docs)
    out = tmp_path / "merged.db"
    result = CliRunner().invoke(cli, ["merge", str(out), str(good), str(tmp_path / "nope.db")])
    assert result.exit_code == 2 and not list(tmp_path.glob("merged.db*"))


def test_index_of_a_missing_root_leaves_no_file(tmp_path: Path) -> None:
    db = tmp_path / "deep" / "new.db"
    result = CliRunner().invoke(cli, ["index", str(tmp_path / "nope"), "--db", str(db)])
    assert result.exit_code == 1 and "not found" in result.stderr
    assert not (tmp_path / "deep").exists()


# ---------------------------------------------------------------- a FIFO or device as --db
@pytest.mark.parametrize("args", [["status"], ["search", "otters", "--mode", "keyword"],
                                  ["index", "DOCS"], ["watch", "DOCS"], ["mcp"],
                                  ["serve", "--watch", "DOCS", "--port", "0"]])
def test_a_fifo_as_db_is_one_line_at_once(tmp_path: Path, docs: Path, qwen_path: Path,
                                          args: list[str]) -> None:
    fifo = tmp_path / "pipe.db"
    os.mkfifo(fifo)
    argv = [str(docs) if a == "DOCS" else a for a in args]
    if args[0] not in ("status",):
        argv += ["-m", str(qwen_path)]
    result = gguf(*argv, "--db", str(fifo), timeout=90)
    assert result.returncode == 1, result.stderr
    assert "FIFO" in result.stderr and "not an index file" in result.stderr
    assert "Traceback" not in result.stderr


def test_a_device_as_db_is_one_line(tmp_path: Path) -> None:
    result = CliRunner().invoke(cli, ["status", "--db", "/dev/null"])
    assert result.exit_code == 1 and "character device" in result.stderr


# ---------------------------------------------------------------- disk full, newer schema
def test_index_on_a_full_disk_is_one_line_and_the_index_stays_valid(
        tmp_path: Path, docs: Path, qwen_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    db = tmp_path / "i.db"
    first = CliRunner().invoke(cli, ["index", str(docs), "--db", str(db), "-m", str(qwen_path)])
    assert first.exit_code == 0, first.stderr
    (docs / "more.md").write_text("# More\n\nQuokkas.\n")

    def full(*args: object, **kwargs: object) -> None:
        raise apsw.FullError("database or disk is full")

    monkeypatch.setattr(Store, "write_document", full)
    result = CliRunner().invoke(cli, ["index", str(docs), "--db", str(db)])
    assert result.exit_code == 1
    assert result.stderr == (f"Error: cannot write {db}: the disk is full; what was written "
                             f"before is kept, and running the same command again goes on "
                             f"from there\n")
    monkeypatch.undo()
    with Index(db, readonly=True) as index:
        assert index.store.conn.execute("PRAGMA integrity_check").fetchall() == [("ok",)]
        assert len(index.store.documents()) == 3


def test_index_under_a_file_size_limit_is_one_line(tmp_path: Path, qwen_path: Path) -> None:
    import resource

    docs = tmp_path / "big"
    docs.mkdir()
    for i in range(200):
        (docs / f"f{i}.md").write_text(" ".join(f"word{i}x{j}" for j in range(200)))
    db = tmp_path / "i.db"
    small = tmp_path / "small"
    small.mkdir()
    (small / "a.md").write_text("# A\n\nOtters.\n")
    assert gguf("index", str(small), "--db", str(db), "-m", str(qwen_path)).returncode == 0

    def limit() -> None:
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (300_000, 300_000))

    result = gguf("index", str(docs), "--db", str(db), "-m", str(qwen_path), timeout=600,
                  preexec_fn=limit)
    assert result.returncode == 1, result.stderr[-2000:]
    assert result.stderr.startswith(f"Error: cannot write {db}: the file-size limit")
    assert result.stderr.count("\n") == 1
    status = gguf("status", "--db", str(db), "--json")
    assert status.returncode == 0, status.stderr
    assert json.loads(status.stdout)["documents"] >= 1
    with Index(db, readonly=True) as index:
        assert index.store.conn.execute("PRAGMA integrity_check").fetchall() == [("ok",)]


def test_writing_an_index_of_a_newer_schema_names_both_versions(tmp_path: Path, docs: Path,
                                                                qwen_path: Path) -> None:
    db = tmp_path / "i.db"
    assert CliRunner().invoke(cli, ["index", str(docs), "--db", str(db), "-m",
                                    str(qwen_path)]).exit_code == 0
    conn = apsw.Connection(str(db))
    conn.execute("INSERT INTO migrations(name, applied_at) VALUES ('0099_future', 0)")
    conn.close()
    result = CliRunner().invoke(cli, ["index", str(docs), "--db", str(db)])
    assert result.exit_code == 1
    assert (f"was written by gguf-embed schema {SCHEMA_VERSION + 1}, this version knows "
            f"schema {SCHEMA_VERSION}") in result.stderr and "upgrade gguf-embed" in result.stderr
    found = CliRunner().invoke(cli, ["search", "otters", "--db", str(db), "--mode", "keyword"])
    assert found.exit_code == 0 and "page" in found.stdout  # reading goes on
    status = CliRunner().invoke(cli, ["status", "--db", str(db)])
    assert status.exit_code == 0 and "documents: 3" in status.stdout
    assert status.stderr.startswith("note: ") and "upgrade gguf-embed" in status.stderr


# ---------------------------------------------------------------- Ctrl-C
def _interrupt_after(proc: subprocess.Popen[str], line: str | None, wait: float = 120) -> str:
    """SIGINT once ``line`` appeared on stderr (or after a moment); all of stderr."""
    lines = Lines(proc.stderr)
    if line is not None:
        assert lines.wait_for(line, wait), lines.text
    else:
        time.sleep(3)
    proc.send_signal(signal.SIGINT)
    try:
        return lines.rest(proc, 60)
    except subprocess.TimeoutExpired:
        proc.kill()
        raise


def test_ctrl_c_on_search_exits_130_with_one_line(tmp_path: Path) -> None:
    proc = subprocess.Popen([sys.executable, "-c", MAIN, "search", "-", "--db",
                             str(tmp_path / "i.db")], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=ENV)
    err = _interrupt_after(proc, None)  # blocked reading queries from stdin
    assert proc.returncode == 130, err
    assert err == "Interrupted.\n"


@pytest.mark.parametrize("command", ["serve", "mcp"])
def test_ctrl_c_on_a_server_exits_130(tmp_path: Path, docs: Path, qwen_path: Path,
                                      command: str) -> None:
    db = tmp_path / "i.db"
    with Index(db, FakeEngine()) as index:
        index.add([docs])
    args = ["serve", "--port", "0"] if command == "serve" else ["mcp", "--http", "--port", "0"]
    args += ["--db", str(db)]
    proc = subprocess.Popen([sys.executable, "-c", MAIN, *args, "-m", str(qwen_path)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=ENV)
    err = _interrupt_after(proc, "serving" if command == "serve" else "MCP server on")
    assert proc.returncode == 130, err
    assert err.rstrip().endswith("Interrupted.") and "Aborted" not in err
    assert "Traceback" not in err
    # announced only once uvicorn runs with its signal handlers: never a half-started loop
    assert "never awaited" not in err and "event loop" not in err, err


@pytest.mark.parametrize("command", ["serve", "mcp"])
def test_a_server_started_with_sigterm_ignored_keeps_ignoring_it(
        tmp_path: Path, docs: Path, qwen_path: Path, command: str) -> None:
    """uvicorn installs its own handlers whatever the process inherited: a SIGTERM ignored
    by the parent (a supervisor that stops the server another way) stopped it, exit 0."""
    db = tmp_path / "i.db"
    with Index(db, FakeEngine()) as index:
        index.add([docs])
    args = ["serve", "--port", "0"] if command == "serve" else ["mcp", "--http", "--port", "0"]
    proc = subprocess.Popen(["sh", "-c", 'trap "" TERM; exec "$@"', "sh", sys.executable, "-c",
                             MAIN, *args, "--db", str(db), "-m", str(qwen_path)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=ENV)
    lines = Lines(proc.stderr)
    try:
        assert lines.wait_for("serving" if command == "serve" else "MCP server on", 120), \
            lines.text
        url = re.search(r"http://127\.0\.0\.1:\d+", lines.text)
        assert url is not None, lines.text
        proc.send_signal(signal.SIGTERM)
        with pytest.raises(subprocess.TimeoutExpired):  # uvicorn's stop took well under this
            proc.wait(5)
        path = "/health" if command == "serve" else "/mcp"
        with urllib.request.urlopen(url.group() + path, timeout=30) as answer:
            assert answer.status < 500
    except urllib.error.HTTPError as exc:  # /mcp without MCP's headers: answered all the same
        assert exc.code < 500
    finally:
        proc.send_signal(signal.SIGINT)
        err = lines.rest(proc, 60)
    assert proc.returncode == 130 and err.rstrip().endswith("Interrupted."), err


LEFTOVERS = """
import asyncio, sys
from gguf_embed.cli._base import interrupted
async def serve():
    pass
pending = serve()  # a server's coroutine a Ctrl-C kept from ever running
loop = asyncio.new_event_loop()  # ... and its loop, never closed
try:
    import uvloop
    other = uvloop.new_event_loop()
except ImportError:
    pass
interrupted()
"""


def test_what_a_ctrl_c_cut_short_says_at_exit_is_silenced() -> None:
    """After "Interrupted." nothing else: an unawaited coroutine's RuntimeWarning and an open
    event loop's complaint at exit are noise after a Ctrl-C."""
    done = subprocess.run([sys.executable, "-X", "dev", "-c", LEFTOVERS], env=ENV,
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 130
    assert done.stderr == "Interrupted.\n", done.stderr


def test_mcp_http_with_port_0_announces_the_real_port(tmp_path: Path, docs: Path,
                                                      qwen_path: Path) -> None:
    import socket

    db = tmp_path / "i.db"
    with Index(db, FakeEngine()) as index:
        index.add([docs])
    proc = subprocess.Popen([sys.executable, "-c", MAIN, "mcp", "--http", "--port", "0",
                             "--db", str(db), "-m", str(qwen_path)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=ENV)
    lines = Lines(proc.stderr)
    try:
        assert lines.wait_for("/mcp", 120), lines.text
        match = re.search(r"http://127\.0\.0\.1:(\d+)/mcp", lines.text)
        assert match, lines.text
        port = int(match.group(1))
        assert port != 0
        with socket.create_connection(("127.0.0.1", port), timeout=30):
            pass  # it listens where it said
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            proc.kill()


def test_serve_accepts_connections_as_soon_as_it_announces_its_port(qwen_path: Path) -> None:
    """A client that reads the "serving ... on URL" line may connect at once: the socket
    listens before the line is written.  The server is stopped (SIGSTOP) the moment the line
    is read, so the connection can only succeed if it was already listening."""
    import socket

    proc = subprocess.Popen([sys.executable, "-c", MAIN, "serve", "--port", "0", "-m",
                             str(qwen_path)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=ENV)
    try:
        line = line_with(proc, "serving", 120)
        proc.send_signal(signal.SIGSTOP)  # nothing more happens in the server until SIGCONT
        match = re.search(r"http://127\.0\.0\.1:(\d+)/v1", line)
        assert match, line
        with socket.create_connection(("127.0.0.1", int(match.group(1))), timeout=30) as conn:
            proc.send_signal(signal.SIGCONT)
            conn.sendall(b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                         b"Connection: close\r\n\r\n")
            reply = b""
            while chunk := conn.recv(65536):
                reply += chunk
        assert reply.startswith(b"HTTP/1.1 200"), reply[:200]
        assert b'"status":"ok"' in reply
    finally:
        proc.send_signal(signal.SIGCONT)
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            proc.kill()


def test_merge_on_a_full_disk_is_one_line_and_the_output_stays_valid(
        tmp_path: Path, docs: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import gguf_embed.store_merge

    out = _shard(tmp_path / "out.db", 64, docs)
    other_docs = tmp_path / "other"
    other_docs.mkdir()
    (other_docs / "b.md").write_text("# B\n\nQuokkas.\n")
    shard = _shard(tmp_path / "b.db", 64, other_docs)

    def full(*args: object) -> None:
        raise apsw.FullError("database or disk is full")

    monkeypatch.setattr(gguf_embed.store_merge, "add_keywords", full)
    result = CliRunner().invoke(cli, ["merge", str(out), str(shard)])
    assert result.exit_code == 1
    assert result.stderr.startswith(f"Error: cannot write {out}: the disk is full")
    assert result.stderr.count("\n") == 1
    monkeypatch.undo()
    with Index(out, readonly=True) as index:
        assert index.store.conn.execute("PRAGMA integrity_check").fetchall() == [("ok",)]
        assert len(index.store.documents()) == 3


@pytest.mark.parametrize("value", ["0", "-2", "nan", "lots"])
def test_threads_out_of_range_is_a_usage_error(tmp_path: Path, docs: Path, value: str) -> None:
    db = tmp_path / "new.db"
    result = CliRunner().invoke(cli, ["index", str(docs), "--db", str(db), "--threads", value])
    assert result.exit_code == 2 and "--threads" in result.stderr, result.stderr
    assert "No such option" not in result.stderr and not db.exists()


def test_threads_reaches_the_model_and_the_reranker(minilm_path: Path,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    """`--threads N` (or GGUF_EMBED_THREADS) is what llama.cpp gets; without it, the
    physical cores (what doctor reported before the option existed)."""
    def threads(*args: str, env: dict[str, str] | None = None) -> int:
        result = CliRunner().invoke(cli, ["doctor", "-m", str(minilm_path), "--json", *args],
                                    env=env)
        assert result.exit_code == 0, result.output
        return int(json.loads(result.stdout)["model"]["threads"])

    from gguf_embed import _llama

    assert threads() == _llama.physical_cores()
    assert threads("--threads", "3") == 3
    assert threads(env={"GGUF_EMBED_THREADS": "5"}) == 5
    from gguf_embed.cli._base import load_reranker

    seen: dict[str, object] = {}
    monkeypatch.setattr("gguf_embed.reranker.Reranker", lambda model, **kw: seen.update(kw))

    @cli.command("probe-reranker", hidden=True)
    @model_options
    def probe(model: str | None, offline: bool, hf_endpoint: str | None,
              cache_dir: str | None) -> None:
        load_reranker(str(minilm_path), offline, hf_endpoint, cache_dir)

    try:
        result = CliRunner().invoke(cli, ["probe-reranker", "--threads", "7"])
        assert result.exit_code == 0, result.output
    finally:
        cli.commands.pop("probe-reranker")
    assert seen == {"n_threads": 7}
