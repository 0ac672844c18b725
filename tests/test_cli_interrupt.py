"""Ctrl-C at the two ends of a CLI command: while the process starts (gguf_embed, click,
numpy import; main() prepares) and while a finished search ends its process (cli/_exit.py).
Either way: at most one line, ``Interrupted.``, and exit 130, or SIGINT's own default past
the last write; never a traceback, never exit 0 for output a Ctrl-C cut short."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from gguf_embed.index import Index
from gguf_embed.testing import FakeEngine
from tests.support.interrupt_scripts import FINDER, SCRIPT

ROOT = Path(__file__).resolve().parent.parent
ENV = {**os.environ, "PYTHONPATH": str(ROOT), "HF_HUB_OFFLINE": "1"}
ROWS = 30


@pytest.fixture(scope="module")
def db(tmp_path_factory: pytest.TempPathFactory) -> Path:
    base = tmp_path_factory.mktemp("interrupt")
    docs = base / "docs"
    docs.mkdir()
    for i in range(ROWS):
        (docs / f"note-{i:02d}.md").write_text(f"# Otters {i}\n\nOtters hold hands, night {i}.\n")
    with Index(base / "i.db", FakeEngine()) as index:
        index.add([docs])
    return base / "i.db"


def search_args(db: Path) -> list[str]:
    return ["search", "otters", "--db", str(db), "--mode", "keyword", "-k", str(ROWS), "--json"]


def run(code: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True,
                          timeout=120, env=ENV, cwd=ROOT)


def complete(stdout: str) -> bool:
    rows = json.loads(stdout)
    return {Path(r["path"]).name for r in rows} == {f"note-{i:02d}.md" for i in range(ROWS)}


# ---- start-up ------------------------------------------------------------------------------

# A Ctrl-C at the moment a module is imported (FINDER).  ``typing`` was imported by
# gguf_embed/__init__, before the CLI's handling (a traceback and death by SIGINT).
MODULE = "import runpy\nrunpy.run_module('gguf_embed', run_name='__main__', alter_sys=True)\n"


@pytest.mark.parametrize("entry", [SCRIPT, MODULE], ids=["script", "python-m"])
@pytest.mark.parametrize("module", ["typing", "click", "gguf_embed.cli._exit", "numpy"])
def test_ctrl_c_while_the_cli_starts_is_one_line_and_130(db: Path, entry: str,
                                                         module: str) -> None:
    out = run(FINDER.format(name=module) + entry, *search_args(db))
    assert (out.returncode, out.stderr, out.stdout) == (130, "Interrupted.\n", "")


# A real SIGINT once the CLI's module is imported, as importlib hands ``main`` to the script
# (``_handle_fromlist``: the package's import is over, main() not yet called).
AFTER_IMPORT = """
import os, signal, sys
def profile(frame, event, arg):
    if (event == "call" and frame.f_code.co_name == "_handle_fromlist"
            and getattr(frame.f_locals.get("module"), "__name__", "") == "gguf_embed.cli"):
        sys.setprofile(None)
        os.kill(os.getpid(), signal.SIGINT)
sys.setprofile(profile)
"""


@pytest.mark.parametrize("entry", [SCRIPT, MODULE], ids=["script", "python-m"])
def test_a_real_sigint_between_the_import_and_main_is_one_line_and_130(db: Path,
                                                                       entry: str) -> None:
    out = run(AFTER_IMPORT + entry, *search_args(db))
    assert (out.returncode, out.stderr, out.stdout) == (130, "Interrupted.\n", "")


def test_the_start_up_handler_is_the_commands_only() -> None:
    """An application (or a test) that imports the click group keeps Python's handler; a
    command started with SIGINT ignored (``nohup``, ``&`` in a script) keeps it ignored;
    main() puts Python's handler back before any command runs."""
    code = """
import signal, sys
import gguf_embed.cli
print(signal.getsignal(signal.SIGINT) is signal.default_int_handler)
sys.argv[0] = "gguf-embed"
del sys.modules["gguf_embed.cli"]
signal.signal(signal.SIGINT, signal.SIG_IGN)
import gguf_embed.cli
print(signal.getsignal(signal.SIGINT) is signal.SIG_IGN)
signal.signal(signal.SIGINT, signal.default_int_handler)
del sys.modules["gguf_embed.cli"]
import gguf_embed.cli
print(signal.getsignal(signal.SIGINT) is gguf_embed.cli._at_once)
sys.argv[1:] = ["--version"]
try:
    gguf_embed.cli.main()
except SystemExit:
    print(signal.getsignal(signal.SIGINT) is signal.default_int_handler)
"""
    out = run(code)
    assert out.stdout.splitlines() == ["True", "True", "True", "gguf-embed, version 0.1.0",
                                      "True"], out.stderr


def interrupting(module: str, target: str, params: str) -> str:
    """main() as the console script runs it, with ``target`` (in ``module``) replaced by a
    function of ``params`` that raises KeyboardInterrupt, as a Ctrl-C landing there would."""
    return (f"import sys, {module}\ndef interrupt({params}):\n    raise KeyboardInterrupt\n"
            f"{target} = interrupt\n" + SCRIPT)


def test_ctrl_c_while_the_groups_options_are_parsed_is_one_line_and_130(db: Path) -> None:
    """click's own handling there printed a blank line, "Aborted!" and exit 1."""
    out = run(interrupting("click", "click.Group.parse_args", "self, ctx, args"),
              *search_args(db))
    assert (out.returncode, out.stderr, out.stdout) == (130, "Interrupted.\n", "")


def test_ctrl_c_while_the_groups_context_closes_is_one_line_and_130(db: Path) -> None:
    """After the command, click closes the group's context inside its own try, where a
    KeyboardInterrupt became a blank line, "Aborted!" and exit 1."""
    out = run(interrupting("click", "click.Context.close", "self"), *search_args(db))
    assert (out.returncode, out.stderr) == (130, "Interrupted.\n"), out.stderr
    assert complete(out.stdout)


def test_ctrl_c_while_main_prepares_the_streams_is_one_line_and_130(db: Path) -> None:
    out = run(interrupting("gguf_embed.cli", "gguf_embed.cli.watch_results", ""),
              *search_args(db))
    assert (out.returncode, out.stderr, out.stdout) == (130, "Interrupted.\n", "")


# The real process, signalled once Python's own import-time report (-X importtime, on stderr
# as each import ends) shows that a module is in: wherever after that the signal lands (a
# loaded host delays it), the outcome is one of the three below.
@pytest.mark.parametrize("marker", ["click", "gguf_embed.cli", "numpy", "gguf_embed.index"])
@pytest.mark.parametrize("entry", [["-m", "gguf_embed"], ["-c", "import sys\n" + SCRIPT]],
                         ids=["python-m", "console-script"])  # what pip's script runs
def test_a_real_ctrl_c_during_start_up(db: Path, marker: str, entry: list[str]) -> None:
    process = subprocess.Popen([sys.executable, "-X", "importtime", *entry, *search_args(db)],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                               env=ENV, cwd=ROOT)
    assert process.stderr is not None
    report: list[str] = []
    for line in process.stderr:
        report.append(line)
        if line.startswith("import time:") and line.rstrip().endswith(f"| {marker}"):
            process.send_signal(signal.SIGINT)
            break
    stdout, rest = process.communicate(timeout=120)
    said = [x for x in "".join(report).splitlines() + rest.splitlines()
            if not x.startswith("import time:")]
    if process.returncode == 130:
        assert said == ["Interrupted."]
    else:  # the search had written its results: it ended, or SIGINT's default ended it
        assert process.returncode in (0, -signal.SIGINT), "\n".join(said)
        assert said == [] and complete(stdout)


# ---- the fast exit (cli/_exit.leave) -------------------------------------------------------

# main() as the console script runs it, with an atexit handler (registered before the CLI's
# own) that does ``{}`` once the search has printed its results.
AT_EXIT = """
import atexit, os, signal, sys
def at_exit():
    {}
atexit.register(at_exit)
""" + SCRIPT


def test_ctrl_c_in_an_atexit_handler_is_130_not_a_traceback_and_0(db: Path) -> None:
    """The ordinary exit prints "Exception ignored in atexit callback" with the traceback and
    keeps exit 0; leave() notes it and the user sees the usual Ctrl-C."""
    out = run(AT_EXIT.format("os.kill(os.getpid(), signal.SIGINT); os.write(2, b'[after]\\n')"),
              *search_args(db))
    assert out.returncode == 130, out.stderr
    assert out.stderr == "[after]\n" "Interrupted.\n"  # the handler ran to its end
    assert complete(out.stdout)


def test_ctrl_c_during_the_last_flush_is_130(db: Path) -> None:
    """A SIGINT that lands while the output is flushed for the last time (here: by the
    stream's own flush) must not end the process with 0 and must not be a traceback."""
    code = AT_EXIT.format("""
    class Signalling:
        def __init__(self, stream): self.stream, self.signals = stream, 1
        def write(self, text): return self.stream.write(text)
        def flush(self):
            if self.signals:  # once
                self.signals -= 1
                os.kill(os.getpid(), signal.SIGINT)
            self.stream.flush()
    sys.stdout = Signalling(sys.stdout)
    print("last line")""")
    out = run(code, *search_args(db))
    assert out.returncode == 130, out.stderr
    assert out.stderr == "Interrupted.\n"
    rows, last = out.stdout.rsplit("]\n", 1)
    assert complete(rows + "]") and last == "last line\n"


def test_a_ctrl_c_still_pending_at_the_end_is_130_not_lost(db: Path) -> None:
    """SIGINT blocked on the main thread (here by an atexit handler; C code does that too)
    is still pending when the process ends: os._exit dropped it (exit 0)."""
    code = AT_EXIT.format("signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT}); "
                          "os.kill(os.getpid(), signal.SIGINT)")
    out = run(code, *search_args(db))
    assert out.returncode == 130, out.stderr
    assert out.stderr == "Interrupted.\n" and complete(out.stdout)


def test_ctrl_c_past_the_last_write_is_sigints_default(db: Path) -> None:
    """Once everything is written, a SIGINT ends the process as it ends any program: killed
    by SIGINT (a shell's 130), nothing printed; before, it was a KeyboardInterrupt in main()'s
    exit path, with a traceback."""
    code = ("import os, signal, sys\nreal_exit = os._exit\n"
            "def exit_(code):\n    os.kill(os.getpid(), signal.SIGINT)\n    real_exit(code)\n"
            "os._exit = exit_\n" + SCRIPT)
    out = run(code, *search_args(db))
    assert out.returncode == -signal.SIGINT, out.stderr
    assert out.stderr == "" and complete(out.stdout)


def test_sigterm_in_the_exit_keeps_its_default(db: Path) -> None:
    out = run(AT_EXIT.format("os.kill(os.getpid(), signal.SIGTERM)"), *search_args(db))
    assert out.returncode == -signal.SIGTERM
    assert out.stderr == "" and complete(out.stdout)


def test_a_second_ctrl_c_after_interrupted_ends_at_once_without_a_traceback(db: Path) -> None:
    """The first Ctrl-C while the search command loads, the second while the process ends:
    the teardown's code (here an atexit handler) no longer reports a KeyboardInterrupt."""
    code = (FINDER.format(name="gguf_embed.cli._search")
            + AT_EXIT.format("os.kill(os.getpid(), signal.SIGINT); os.write(2, b'[after]')"))
    out = run(code, *search_args(db))
    assert out.returncode == -signal.SIGINT, out.stderr
    assert out.stderr == "Interrupted.\n" and out.stdout == ""


def test_leave_with_sigint_ignored_or_an_applications_handler_is_as_before() -> None:
    """``nohup``-style SIG_IGN stays ignored to the end (the search ends 0); the handler is
    never replaced by the default when it was not Python's own."""
    code = """
import os, signal, sys
from gguf_embed.cli import _exit
signal.signal(signal.SIGINT, signal.SIG_IGN)
print("results")
_exit.started(); _exit.quickly()
import atexit
atexit.register(lambda: (os.kill(os.getpid(), signal.SIGINT), print("handler")))
_exit.leave(0)
print("not reached")
"""
    out = run(code)
    assert (out.returncode, out.stdout, out.stderr) == (0, "results\nhandler\n", "")
