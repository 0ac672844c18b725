"""A real `gguf-embed watch` subprocess (MiniLM), with files changed under it; bounded waits."""

from __future__ import annotations

import json
import os
import queue
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from gguf_embed.index import Index

from .support.procs import interrupt
from .test_index import orphans

MAIN = "from gguf_embed.cli import main; import sys; sys.argv[0] = 'gguf-embed'; main()"
WAIT = 60.0  # seconds: generous bounds for a loaded 2-core host; never asserted as speed


class Watcher:
    """`gguf-embed watch DOCS --json`: its JSON Lines events, read on a thread."""

    def __init__(self, docs: Path, db: Path, model: Path, *extra: str,
                 ignoring: signal.Signals | None = None) -> None:
        command = [sys.executable, "-c", MAIN, "watch", str(docs), "--db", str(db), "-m",
                   str(model), "--json", *extra]
        if ignoring is not None:  # started with the signal ignored, as nohup-like wrappers do
            command = ["sh", "-c", f'trap "" {ignoring.name.removeprefix("SIG")}; exec "$@"',
                       "sh", *command]
        self.proc = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                     text=True)
        self.events: queue.Queue[dict[str, Any] | None] = queue.Queue()  # None: stdout ended
        self.seen: list[dict[str, Any]] = []
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.events.put(json.loads(line))
        self.events.put(None)

    def next_event(self, timeout: float = WAIT) -> dict[str, Any]:
        try:
            event = self.events.get(timeout=timeout)
        except queue.Empty:
            self.stop()
            raise AssertionError(f"no event in {timeout} s; stderr: {self.stderr()}") from None
        if event is None:  # exited (or closed stdout): no more events will come
            self.events.put(None)
            self.stop()
            raise AssertionError(f"watch ended (exit {self.proc.returncode}); stderr: "
                                 f"{self.stderr()}")
        self.seen.append(event)
        return event

    def until(self, check: Any, timeout: float = WAIT) -> list[dict[str, Any]]:
        """Events up to the first one for which ``check(event)`` holds."""
        got = []
        deadline = time.monotonic() + timeout
        while True:
            event = self.next_event(max(0.1, deadline - time.monotonic()))
            got.append(event)
            if check(event):
                return got

    def stderr(self) -> str:
        if self.proc.poll() is None:
            return "(running)"
        assert self.proc.stderr is not None
        return self.proc.stderr.read()

    def stop(self, sig: int = signal.SIGINT) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        try:
            return self.proc.wait(timeout=WAIT)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            raise


@pytest.fixture()
def docs(tmp_path: Path) -> Path:
    root = tmp_path / "docs"
    root.mkdir()
    for i in range(5):
        (root / f"page{i}.md").write_text(f"# Page {i}\n\nThis page is about topic number {i}.\n")
    return root


def documents(db: Path) -> set[str]:
    with Index(db, readonly=True) as index:
        return set(index.store.documents())


def test_watch_applies_changes_as_they_come(docs: Path, tmp_path: Path,
                                            minilm_path: Path) -> None:
    db = tmp_path / "i.db"
    w = Watcher(docs, db, minilm_path)
    try:
        first = w.next_event()
        assert first["kind"] == "catch-up" and first["summary"]["added"] == 5

        (docs / "zebra.md").write_text("# Zebras\n\nStriped horses of the savanna.\n")
        w.until(lambda e: str(docs / "zebra.md") in e["paths"])
        with Index(db, readonly=True) as index:
            assert index.search("zebras", mode="keyword")[0].path == str(docs / "zebra.md")

        with Index(db, readonly=True) as index:
            ids = [r[0] for r in index.store.conn.execute(
                "SELECT c.id FROM chunks c JOIN documents d ON d.id = c.doc_id "
                "WHERE d.path = ?", (str(docs / "page1.md"),))]
        os.rename(docs / "page1.md", docs / "renamed.md")
        moved = w.until(lambda e: str(docs / "renamed.md") in e["paths"])
        assert moved[-1]["summary"]["moved"] == 1
        with Index(db, readonly=True) as index:  # the same chunk rows: vectors reused
            assert ids == [r[0] for r in index.store.conn.execute(
                "SELECT c.id FROM chunks c JOIN documents d ON d.id = c.doc_id "
                "WHERE d.path = ?", (str(docs / "renamed.md"),))]

        tmp = docs / ".page2.md.tmp"  # an editor's atomic save
        tmp.write_text("# Page 2\n\nNow about quokkas.\n")
        os.replace(tmp, docs / "page2.md")
        w.until(lambda e: e["summary"] and e["summary"]["updated"] >= 1)
        with Index(db, readonly=True) as index:
            assert index.search("quokkas", mode="keyword")[0].path == str(docs / "page2.md")

        os.remove(docs / "page3.md")
        w.until(lambda e: str(docs / "page3.md") in e["paths"])

        (docs / ".gitignore").write_text("page4.md\n")
        w.until(lambda e: str(docs / ".gitignore") in e["paths"])
        assert documents(db) == {str(docs / n) for n in (
            "page0.md", "renamed.md", "page2.md", "zebra.md", ".gitignore")}

        bulk = docs / "bulk"  # a checkout of 500 files at once (one text: one embedding)
        bulk.mkdir()
        for i in range(500):
            (bulk / f"f{i:03}.txt").write_text("a file of a bulk checkout\n")
        batches = w.until(lambda e: len([p for p in documents(db) if "/bulk/" in p]) == 500)
        assert len(batches) <= 5, [len(b["paths"]) for b in batches]
    finally:
        code = w.stop()
    assert code == 130  # Ctrl-C, as for every command
    assert "stopped" in w.stderr()
    with Index(db, readonly=True) as index:
        assert orphans(index) == dict.fromkeys(orphans(index), 0)


def test_kill_nine_then_the_next_run_catches_up(docs: Path, tmp_path: Path,
                                                minilm_path: Path) -> None:
    db = tmp_path / "i.db"
    w = Watcher(docs, db, minilm_path)
    assert w.next_event()["kind"] == "catch-up"
    w.stop(signal.SIGKILL)
    (docs / "while-down.md").write_text("# Written while nobody watched\n\nOtters.\n")
    os.remove(docs / "page0.md")
    w = Watcher(docs, db, minilm_path)
    try:
        first = w.next_event()
        assert first["kind"] == "catch-up"
        assert (first["summary"]["added"], first["summary"]["removed"]) == (1, 1)
    finally:
        assert w.stop(signal.SIGTERM) == 143
    assert str(docs / "while-down.md") in documents(db)


@pytest.mark.parametrize(("ignored", "stop", "code"), [
    (signal.SIGTERM, signal.SIGINT, 130), (signal.SIGINT, signal.SIGTERM, 143)])
def test_an_inherited_ignored_signal_stays_ignored(
        docs: Path, tmp_path: Path, minilm_path: Path, ignored: signal.Signals,
        stop: signal.Signals, code: int) -> None:
    """A watch started with SIGTERM (or SIGINT) ignored keeps ignoring it; the other one still
    stops it gracefully."""
    db = tmp_path / "i.db"
    w = Watcher(docs, db, minilm_path, ignoring=ignored)
    try:
        assert w.next_event()["kind"] == "catch-up"  # watching: its handlers are in place
        w.proc.send_signal(ignored)
        # a change made after the signal was sent, applied and reported: watch lived on past it
        (docs / "after.md").write_text("# After the signal\n\nStill watching.\n")
        w.until(lambda e: str(docs / "after.md") in e["paths"])
        assert w.proc.poll() is None
    finally:
        got = w.stop(stop)
    assert got == code, w.stderr()
    assert "stopped" in w.stderr()
    assert str(docs / "after.md") in documents(db)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture()
def serve_watch(docs: Path, tmp_path: Path, minilm_path: Path) -> Iterator[str]:
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-c", MAIN, "serve", "--db", str(tmp_path / "i.db"), "-m",
         str(minilm_path), "--port", str(port), "--watch", str(docs)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_until(lambda: _up(url), proc)
        yield url
    finally:
        interrupt(proc, WAIT)


def test_serve_watch_keeps_the_index_live(serve_watch: str, docs: Path) -> None:
    def found(word: str) -> bool:
        r = httpx.post(f"{serve_watch}/v1/search", json={"query": word, "mode": "keyword"})
        return r.status_code == 200 and any(
            h["path"].endswith("llama.md") for h in r.json()["data"])

    (docs / "llama.md").write_text("# Llamas\n\nWoolly animals of the Andes.\n")
    wait_until(lambda: found("llamas"))
    r = httpx.post(f"{serve_watch}/v1/search", json={"query": "woolly andes animals"})
    assert r.json()["data"][0]["path"] == str(docs / "llama.md")


def _up(url: str) -> bool:
    try:
        return httpx.get(f"{url}/health").status_code == 200
    except httpx.HTTPError:
        return False


def wait_until(check: Any, proc: subprocess.Popen | None = None,
               timeout: float = WAIT) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if proc is not None and proc.poll() is not None:
            raise AssertionError(f"exited: {proc.stderr.read() if proc.stderr else ''}")
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.1)
