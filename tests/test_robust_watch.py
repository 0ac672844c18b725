"""A watched root that goes away (renamed, moved, unmounted) is paused and loses nothing; when
it is back, watching resumes (issue 18).  A second watcher on a locked index says whom it
waits for."""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from gguf_embed._lock import WriteLock
from gguf_embed.index import Index
from gguf_embed.testing import FakeEngine
from gguf_embed.walk import Rules
from gguf_embed.watch import Background, WatchEvent, plan

from .support.lines import Lines

ROOT = Path(__file__).resolve().parent.parent
MAIN = "from gguf_embed.cli import main; import sys; sys.argv[0] = 'gguf-embed'; main()"
WAIT = 60.0  # generous bounds for a loaded host; never asserted as speed


def write_docs(folder: Path, count: int = 4) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(count):
        (folder / f"page{i}.md").write_text(f"# Page {i}\n\nOtters, part {i}.\n")
    return folder


def documents(db: Path) -> set[str]:
    with Index(db, readonly=True) as index:
        return {os.path.basename(p) for p in index.store.documents()}


def wait_for(check: Callable[[], bool], what: str) -> None:
    deadline = time.monotonic() + WAIT
    while not check():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)


class Watching:
    """index.watch on a thread, with its events."""

    def __init__(self, db: Path, roots: list[Path], polling: bool) -> None:
        self.events: list[WatchEvent] = []
        self.stop = threading.Event()
        self.error: BaseException | None = None

        def run() -> None:
            try:
                with Index(db, FakeEngine()) as index:
                    index.watch(roots, self.stop, self.events.append, debounce_ms=200,
                                step_ms=50, force_polling=polling)
            except BaseException as exc:
                self.error = exc

        self.thread = threading.Thread(target=run, daemon=True)
        self.thread.start()

    def kinds(self) -> list[str]:
        return [e.kind for e in self.events]

    def wait(self, kind: str, count: int = 1) -> WatchEvent:
        wait_for(lambda: self.kinds().count(kind) >= count or self.error is not None, kind)
        assert self.error is None, self.error
        return [e for e in self.events if e.kind == kind][count - 1]

    def close(self) -> None:
        self.stop.set()
        self.thread.join(WAIT)


@pytest.fixture(params=[False, True], ids=["native", "polling"])
def polling(request: pytest.FixtureRequest) -> bool:
    return bool(request.param)


@pytest.fixture()
def watching(tmp_path: Path, polling: bool) -> Iterator[tuple[Watching, Path, Path]]:
    docs = write_docs(tmp_path / "docs")
    db = tmp_path / "i.db"
    w = Watching(db, [docs], polling)
    try:
        w.wait("catch-up")
        yield w, docs, db
    finally:
        w.close()


def test_a_renamed_root_is_paused_and_resumes_when_it_is_back(
        watching: tuple[Watching, Path, Path], tmp_path: Path) -> None:
    w, docs, db = watching
    os.rename(docs, tmp_path / "elsewhere")
    paused = w.wait("paused")
    assert paused.paths == [str(docs)] and "nothing under it is removed" in (paused.note or "")
    time.sleep(1.0)  # events of the move had time to arrive: none may remove anything
    assert documents(db) == {f"page{i}.md" for i in range(4)}
    assert not any(e.summary and e.summary.removed for e in w.events)

    os.rename(tmp_path / "elsewhere", docs)
    w.wait("resumed")
    (docs / "new.md").write_text("# New\n\nBadgers arrive.\n")
    wait_for(lambda: "new.md" in documents(db), "the new file to be indexed")
    assert documents(db) == {f"page{i}.md" for i in range(4)} | {"new.md"}


def test_a_root_recreated_after_a_move_is_caught_up(watching: tuple[Watching, Path, Path],
                                                    tmp_path: Path) -> None:
    w, docs, db = watching
    shutil.move(str(docs), str(tmp_path / "moved"))
    w.wait("paused")
    write_docs(docs, 2)  # a new folder at the same place, with some of the files
    (docs / "fresh.md").write_text("# Fresh\n\nWombats.\n")
    w.wait("resumed")
    wait_for(lambda: "fresh.md" in documents(db), "the catch-up after resuming")
    (docs / "later.md").write_text("# Later\n\nEchidnas.\n")
    wait_for(lambda: "later.md" in documents(db), "watching the new folder")


def test_an_emptied_root_is_an_unmounted_drive_and_loses_nothing(
        watching: tuple[Watching, Path, Path], tmp_path: Path) -> None:
    w, docs, db = watching
    away = tmp_path / "away"
    away.mkdir()
    for f in list(docs.iterdir()):  # the mount point stays, empty
        f.rename(away / f.name)
    w.wait("paused")
    time.sleep(1.0)
    assert documents(db) == {f"page{i}.md" for i in range(4)}
    for f in list(away.iterdir()):
        f.rename(docs / f.name)
    w.wait("resumed")
    (docs / "new.md").write_text("# New\n\nBadgers.\n")
    wait_for(lambda: "new.md" in documents(db), "the new file")


def test_a_batch_planned_under_a_gone_root_prunes_nothing(tmp_path: Path) -> None:
    docs = write_docs(tmp_path / "docs")
    gone = [str(docs / "page1.md"), str(docs)]
    os.rename(docs, tmp_path / "elsewhere")
    todo = plan(gone, [docs], Rules())
    assert todo.scopes == [] and todo.found == []


def test_background_watch_pauses_a_gone_root(tmp_path: Path) -> None:
    """serve --watch and mcp --watch: the same watch, on a thread."""
    docs = write_docs(tmp_path / "docs")
    db = tmp_path / "i.db"
    watcher = Background(db, FakeEngine(), [docs], debounce_ms=200, step_ms=50).start()
    try:
        assert watcher.caught_up.wait(WAIT)
        os.rename(docs, tmp_path / "elsewhere")
        wait_for(lambda: str(docs) in watcher.state()["paused"], "the pause")
        assert documents(db) == {f"page{i}.md" for i in range(4)}
        os.rename(tmp_path / "elsewhere", docs)
        wait_for(lambda: not watcher.state()["paused"], "the resume")
        (docs / "new.md").write_text("# New\n\nBadgers.\n")
        wait_for(lambda: "new.md" in documents(db), "the new file")
        assert watcher.state()["running"] and watcher.error is None
    finally:
        watcher.stop()


@contextlib.contextmanager
def waiting_for_the_lock(tmp_path: Path, args: list[str]) -> Iterator[
        tuple[Path, subprocess.Popen[str], Lines]]:
    """``gguf-embed ARGS --db DB -m MODEL`` started while this test holds the write lock of
    the empty index DB, once it says whose lock it waits for; the lock is released and the
    process ended (terminated, killed after WAIT) as the block ends."""
    db = tmp_path / "i.db"
    with Index(db, FakeEngine()):
        pass
    lock = WriteLock(db)
    lock.acquire()
    proc = subprocess.Popen([sys.executable, "-c", MAIN, *args, "--db", str(db)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, "PYTHONPATH": str(ROOT)})
    lines = Lines(proc.stderr)
    try:
        assert lines.wait_for(f"index {db} is being written by PID {os.getpid()}", WAIT), \
            lines.text
        yield db, proc, lines
    finally:
        lock.release()
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(timeout=WAIT)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


@pytest.mark.parametrize("command", ["watch", "serve"])
def test_a_second_watcher_says_who_holds_the_index(tmp_path: Path, qwen_path: Path,
                                                   command: str) -> None:
    docs = write_docs(tmp_path / "docs")
    args = ["watch", str(docs)] if command == "watch" else [
        "serve", "--port", "0", "--watch", str(docs)]
    with waiting_for_the_lock(tmp_path, [*args, "-m", str(qwen_path)]) as (_, _, lines):
        if command == "serve":  # it serves meanwhile
            assert lines.wait_for("serving", WAIT), lines.text


def test_sigterm_while_watch_waits_for_the_index_is_a_graceful_stop(
        tmp_path: Path, minilm_path: Path) -> None:
    """SIGTERM while watch waits for another writer's lock: 143 and 'stopped', as once it
    watches (not 'Interrupted.' and Ctrl-C's 130); nothing was written."""
    docs = write_docs(tmp_path / "docs")
    with waiting_for_the_lock(tmp_path, ["watch", str(docs), "-m", str(minilm_path)]) as (
            db, proc, lines):
        proc.terminate()
        code = proc.wait(timeout=WAIT)
    assert code == 143, lines.text
    assert lines.wait_for("stopped", WAIT), lines.text
    assert "Interrupted" not in lines.text
    assert documents(db) == set()
