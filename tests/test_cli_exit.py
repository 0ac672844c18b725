"""How a one-shot search ends its process (cli/_exit.py): without the interpreter's teardown
(60-100 ms of a one-shot on a 2-core host), but with everything the ordinary exit owes the
user first: threads joined, ``atexit`` handlers run, output flushed, the exit code kept."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

# Run as the console script runs: markers for the two halves of an interpreter's exit.  The
# atexit handler is owed to the user; the destructor of a module-level object runs only in
# the teardown that a finished search skips.
MARKED = """
import atexit, os, sys
atexit.register(lambda: os.write(2, b"[atexit ran]"))
class Teardown:
    def __del__(self):
        os.write(2, b"[teardown ran]")
keep = Teardown()
"""


def run(code: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-c", MARKED + code, *args], capture_output=True,
                          text=True, timeout=120, cwd=ROOT,
                          env={**os.environ, "PYTHONPATH": str(ROOT)})


def cli(*args: str) -> subprocess.CompletedProcess[str]:
    return run("sys.argv[0] = 'gguf-embed'\nfrom gguf_embed.cli import main\nmain()", *args)


def test_a_search_ends_without_the_teardown_and_with_all_its_output(
        tmp_path: Path, minilm_path: Path) -> None:
    docs = tmp_path / "docs"
    docs.mkdir()
    for i in range(40):
        (docs / f"note-{i:02d}.md").write_text(
            f"# Note {i}\n\nOtters hold hands while they sleep, night {i}.\n")
    db = tmp_path / "index.db"
    built = cli("index", str(docs), "--db", str(db), "-m", str(minilm_path))
    assert built.returncode == 0, built.stderr
    assert "[atexit ran]" in built.stderr and "[teardown ran]" in built.stderr  # not asked

    found = cli("search", "otters sleeping", "--db", str(db), "-m", str(minilm_path),
                "-k", "40", "--json")
    assert found.returncode == 0, found.stderr
    assert "[atexit ran]" in found.stderr
    assert "[teardown ran]" not in found.stderr
    rows = json.loads(found.stdout)  # the whole array: flushed before the process ended
    assert len(rows) == 40
    assert {Path(r["path"]).name for r in rows} == {f"note-{i:02d}.md" for i in range(40)}

    vector = cli("embed", "otters sleeping", "-m", str(minilm_path))
    assert vector.returncode == 0, vector.stderr
    assert len(json.loads(vector.stdout)) == 384 and "[teardown ran]" not in vector.stderr

    missing = cli("search", "otters", "--db", str(tmp_path / "none.db"))
    assert missing.returncode == 1
    assert "Error: no index at" in missing.stderr and "[teardown ran]" not in missing.stderr


def test_leaving_joins_threads_and_runs_atexit_before_the_process_ends() -> None:
    """A thread the command left running finishes its work first, as the ordinary exit
    waits for it; the code is kept."""
    done = run("""
import threading, time
from gguf_embed.cli import _exit
def late():
    time.sleep(0.3)
    print("thread finished")
threading.Thread(target=late).start()
atexit.register(lambda: print("atexit handler"))
print("results")
_exit.quickly()
_exit.leave(3)
print("not reached")
""")
    assert done.returncode == 3
    assert done.stdout.splitlines() == ["results", "thread finished", "atexit handler"]
    assert "[teardown ran]" not in done.stderr


def test_leaving_is_the_ordinary_exit_unless_asked_or_when_output_cannot_be_flushed() -> None:
    done = run("""
from gguf_embed.cli import _exit
_exit.leave(0)
print("not asked: returned")
_exit.quickly()
_exit.leave("a message")
print("not a number: returned")
_exit.quickly()
_exit.forget()
_exit.leave(0)
print("forgotten: returned")
class Broken:
    def write(self, text): return len(text)
    def flush(self): raise BrokenPipeError
real, sys.stdout = sys.stdout, Broken()
_exit.quickly()
_exit.leave(0)
sys.stdout = real
print("cannot flush: returned")
""")
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines() == ["not asked: returned", "not a number: returned",
                                        "forgotten: returned", "cannot flush: returned"]
    assert "[teardown ran]" in done.stderr  # the ordinary exit, in the end
