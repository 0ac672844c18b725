"""CLI defects a hostile probe found: ``embed -``, a closed stderr, ``index --reindex``
without ``-m``, escapes in --path errors, an ignored SIGINT, a deleted current folder, empty
option values, and messages that did not name the option to change."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
from click.testing import CliRunner

from gguf_embed import Engine
from gguf_embed.cli import cli
from tests.support.small_index import small_index

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


# ---------------------------------------------------------------- 2. stderr closed: stdout clean
def _cli(*args: str, close_stderr: bool = False, cwd: Path = ROOT,
         **kwargs: object) -> subprocess.CompletedProcess[bytes]:
    """``python -m gguf_embed ARGS`` in a real child (``2>&-`` when ``close_stderr``)."""
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.run([sys.executable, "-m", "gguf_embed", *args], env=env, cwd=cwd,
                          stdout=subprocess.PIPE,
                          stderr=None if close_stderr else subprocess.PIPE,
                          preexec_fn=(lambda: os.close(2)) if close_stderr else None,
                          timeout=300, **kwargs)  # type: ignore[call-overload]


def test_errors_never_reach_stdout_when_stderr_is_closed(tmp_path: Path) -> None:
    db = small_index(tmp_path)
    for args, code in ((["search", "--db", str(db), ""], 2),
                       (["search", "--db", str(tmp_path / "none.db"), "x"], 1),
                       (["search", "--bogus"], 2), (["nosuchcommand"], 2)):
        shown = _cli(*args)
        assert shown.returncode == code and shown.stderr, args  # the message exists...
        closed = _cli(*args, close_stderr=True)
        assert (closed.returncode, closed.stdout) == (code, b""), args  # ...and stays off stdout


# ---------------------------------------------------------------- 3. --reindex keeps the model
def test_reindex_without_model_uses_the_index_model(tmp_path: Path, minilm_path: Path) -> None:
    docs = tmp_path / "docs"
    docs.mkdir()
    (docs / "a.md").write_text("# Otters\n\nOtters hold hands while they sleep.\n")
    db = tmp_path / "i.db"
    runner = CliRunner()
    built = runner.invoke(cli, ["index", str(docs), "--db", str(db), "-m", str(minilm_path)])
    assert built.exit_code == 0, built.stderr
    empty_cache = tmp_path / "hf"  # the catalog default is not there: never fetched
    again = runner.invoke(cli, ["index", str(docs), "--db", str(db), "--reindex", "--offline",
                                "--cache-dir", str(empty_cache), "--json"])
    assert again.exit_code == 0, again.stderr
    assert json.loads(again.stdout)["added"] == 1
    status = json.loads(runner.invoke(cli, ["status", "--db", str(db), "--json"]).stdout)
    assert status["dims"] == 384 and Path(status["model_file"]).name == minilm_path.name


# ---------------------------------------------------------------- 4. --path errors: escaped
def test_a_bad_path_filter_never_sends_its_escapes_to_the_terminal(tmp_path: Path) -> None:
    db = small_index(tmp_path)
    result = CliRunner().invoke(cli, ["search", "otters", "--db", str(db), "--mode",
                                      "keyword", "--path", "\x1b]0;pwned\x07\x1b[2J[z-a]"])
    assert result.exit_code == 1 and result.stdout == ""
    assert "\x1b" not in result.stderr and "\x07" not in result.stderr
    assert "\\x1b]0;pwned\\x07\\x1b[2J[z-a]" in result.stderr
    assert result.stderr.startswith("Error: ") and result.stderr.count("\n") == 1


def test_mcp_without_an_index_escapes_the_db_path(tmp_path: Path) -> None:
    result = CliRunner().invoke(cli, ["mcp", "--db", str(tmp_path / "\x1b[2Jx.db")])
    assert result.exit_code == 1 and "\x1b" not in result.stderr
    assert "\\x1b[2Jx.db" in result.stderr


# ---------------------------------------------------------------- 5. an ignored SIGINT stays so
def test_index_leaves_an_inherited_ignored_sigint_alone(tmp_path: Path,
                                                        minilm_path: Path) -> None:
    """A background job of a script (``gguf-embed index ... &``) starts with SIGINT ignored;
    a SIGINT that lands while it indexes (sent here by the process itself, just before the
    files are read) must not stop it, as it does not stop search or embed."""
    docs = tmp_path / "docs"
    docs.mkdir()
    (docs / "a.md").write_text("# Otters\n\nOtters hold hands while they sleep.\n")
    script = ("import os, signal, sys\n"
              "from gguf_embed.index import Index\n"
              "add = Index.add\n"
              "def interrupted_add(self, *a, **k):\n"
              "    os.kill(os.getpid(), signal.SIGINT)\n"
              "    return add(self, *a, **k)\n"
              "Index.add = interrupted_add\n"
              "sys.argv = ['gguf-embed', *sys.argv[1:]]\n"
              "from gguf_embed.cli import main\n"
              "main()\n")
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    result = subprocess.run(
        [sys.executable, "-c", script, "index", str(docs), "--db", str(tmp_path / "i.db"),
         "-m", str(minilm_path), "--json"], env=env, cwd=ROOT, capture_output=True,
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_IGN), timeout=300)
    assert result.returncode == 0, result.stderr.decode()
    assert json.loads(result.stdout)["added"] == 1


# ---------------------------------------------------------------- 6. a deleted current folder
def test_a_deleted_current_folder_gives_absolute_paths_or_one_line(tmp_path: Path) -> None:
    db = small_index(tmp_path)
    gone = tmp_path / "gone"
    gone.mkdir()

    def run(*args: str) -> subprocess.CompletedProcess[bytes]:
        env = {**os.environ, "PYTHONPATH": str(ROOT)}
        return subprocess.run([sys.executable, "-m", "gguf_embed", *args], env=env, cwd=gone,
                              capture_output=True, preexec_fn=lambda: os.rmdir(gone),
                              timeout=300)

    found = run("search", "otters", "--db", str(db), "--mode", "keyword")
    assert found.returncode == 0, found.stderr.decode()
    assert found.stdout.decode().startswith(f"{tmp_path / 'docs' / 'a.md'}:")
    gone.mkdir()
    for args in (["search", "otters", "--db", str(db), "--mode", "keyword", "--path", "d/*"],
                 ["status", "--db", "i.db"],
                 ["index", "docs", "--db", str(db), "-m", "unused.gguf"]):
        refused = run(*args)
        message = refused.stderr.decode()
        assert refused.returncode == 1 and refused.stdout == b"", (args, message)
        assert message == ("Error: the current folder no longer exists (deleted while in use): "
                           "cd to a folder that exists, or give absolute paths\n"), args
        gone.mkdir()


# ---------------------------------------------------------------- 7. empty values are refused
def test_empty_remote_options_are_refused_not_read_as_their_default(tmp_path: Path) -> None:
    """An empty --embed-url meant a local default model (a multi-GB download); an empty CA
    file meant the public CAs.  Each is a usage error naming the option or variable, before
    any model loads or connection is made (127.0.0.1:9 would refuse one)."""
    offline = ["--offline", "--cache-dir", str(tmp_path / "hf")]
    url = ["--embed-url", "https://127.0.0.1:9"]
    cases = [
        (["--embed-url", ""], {}, "'--embed-url': is empty"),
        (["--embed-url", " "], {}, "'--embed-url': is empty"),
        ([*url, "--embed-ca-cert", ""], {}, "'--embed-ca-cert': is empty"),
        ([*url, "--embed-api-key", ""], {}, "'--embed-api-key': is empty"),
        ([*url, "--embed-model", ""], {}, "'--embed-model': is empty"),
        ([], {"GGUF_EMBED_EMBED_URL": ""}, "GGUF_EMBED_EMBED_URL is set but empty"),
        (url, {"GGUF_EMBED_EMBED_CA_CERT": ""}, "GGUF_EMBED_EMBED_CA_CERT is set but empty"),
        (url, {"GGUF_EMBED_EMBED_CA_CERT": "  "},
         "is empty (GGUF_EMBED_EMBED_CA_CERT)"),
    ]
    for args, env, message in cases:
        for command in (["embed", "hi"], ["search", "hi", "--db", str(tmp_path / "i.db")]):
            result = CliRunner().invoke(cli, [*command, *offline, *args], env=env)
            assert result.exit_code == 2, (command, args, env, result.stderr)
            assert message in result.stderr and result.stdout == "", (args, env)
    assert "GGUF_EMBED_EMBED_CA_CERT" not in os.environ  # the runner set it for a call only
    unused = CliRunner().invoke(cli, ["embed", "hi", *offline],  # no URL: the CA is unused
                                env={"GGUF_EMBED_EMBED_CA_CERT": ""})
    assert "GGUF_EMBED_EMBED_CA_CERT" not in unused.stderr


# ---------------------------------------------------------------- 8. messages name the option
def test_a_too_long_path_filter_names_path(tmp_path: Path) -> None:
    db = small_index(tmp_path)
    result = CliRunner().invoke(cli, ["search", "otters", "--db", str(db), "--mode", "keyword",
                                      "--path", "*" + "a" * 5_000])
    assert result.exit_code == 1
    assert result.stderr == ("Error: the path filter (--path) is 5,001 characters long; "
                             "at most 4,096\n")


def test_a_too_long_input_names_truncate(minilm_path: Path) -> None:
    long = "word " * 2_000
    result = CliRunner().invoke(cli, ["embed", "short", long, "-m", str(minilm_path)])
    assert result.exit_code == 1 and result.stdout == ""
    assert result.stderr.startswith("Error: input 1 has ")
    assert result.stderr.endswith("tokens but the model's context holds 512: split it, or "
                                  "pass --truncate to cut it to fit\n")
    cut = CliRunner().invoke(cli, ["embed", "short", long, "--truncate", "-m",
                                   str(minilm_path)])
    assert cut.exit_code == 0 and len(cut.stdout.splitlines()) == 2


def test_a_folder_as_model_says_it_is_a_folder(tmp_path: Path) -> None:
    (tmp_path / "m.gguf").write_bytes(b"")
    (tmp_path / "sub").mkdir()
    for folder, hint in ((tmp_path, " (it holds m.gguf)"), (tmp_path / "sub", "")):
        result = CliRunner().invoke(cli, ["embed", "hi", "-m", str(folder)])
        assert result.exit_code == 1
        assert result.stderr == (f"Error: {folder} is a folder, not a model file: pass the "
                                 f"path of a .gguf file{hint}\n")


def test_an_empty_query_is_a_usage_error_as_an_empty_text_is(tmp_path: Path) -> None:
    db = small_index(tmp_path)
    for query in ("", "   "):
        result = CliRunner().invoke(cli, ["search", query, "--db", str(db)])
        assert result.exit_code == 2 and result.stdout == ""
        assert "Error: the query is empty: give the text to search for" in result.stderr
    lines = CliRunner().invoke(cli, ["search", "-", "--db", str(db), "--mode", "keyword"],
                               input="otters\n\n")
    assert lines.exit_code == 0 and lines.stdout.splitlines()[1] == "[]"
