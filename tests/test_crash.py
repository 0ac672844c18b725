"""kill -9 at random points of an index run, then re-run: the same rows and results as a clean
build, no duplicates, no orphans, an intact file after every kill."""

from __future__ import annotations

import random
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

from gguf_embed.index import Index

from .test_index import orphans, rows

INDEX = "from gguf_embed.cli import main; import sys; sys.argv[0] = 'gguf-embed'; main()"


def run_index(docs: Path, db: Path, model: Path, *extra: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-c", INDEX, "index", str(docs), "--db", str(db),
                             "-m", str(model), "--json", *extra],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)


def wait_for_a_commit(proc: subprocess.Popen) -> None:
    """Until the run's first progress report: a batch is committed (or the run ended)."""
    assert proc.stderr is not None
    seen = b""
    while b"chunks" not in seen:
        byte = proc.stderr.read(1)
        if not byte:
            return
        seen += byte


def queries(docs: Path) -> list[str]:
    out = []
    for page in sorted(docs.glob("*.md"))[::25]:
        out.append(next(ln[2:] for ln in page.read_text().splitlines() if ln.startswith("> ")))
    return out


def snapshot(db: Path, model: Path, docs: Path) -> tuple[list, list]:
    from gguf_embed import Engine

    with Engine(model) as engine, Index(db, engine, readonly=True) as index:
        assert all(v == 0 for v in orphans(index).values()), orphans(index)
        (check,), = index.store.conn.execute("PRAGMA integrity_check")
        assert check == "ok"
        found = [[(h.path, h.start_line, h.end_line) for h in index.search(q, k=3)]
                 for q in queries(docs)]
        return rows(index), found


def test_kill_nine_then_resume_equals_clean_build(tmp_path: Path, corpora: Path,
                                                  minilm_path: Path) -> None:
    docs = tmp_path / "docs"
    docs.mkdir()
    for page in sorted((corpora / "tldr-linux" / "pages").glob("*.md"))[:300]:
        shutil.copy(page, docs / page.name)
    clean_db = tmp_path / "clean.db"
    proc = run_index(docs, clean_db, minilm_path)
    start = time.monotonic()
    assert proc.wait(timeout=600) == 0, proc.stderr.read().decode() if proc.stderr else ""
    clean_seconds = time.monotonic() - start
    clean_rows, clean_results = snapshot(clean_db, minilm_path, docs)
    assert len({r[0] for r in clean_rows}) == 300

    db = tmp_path / "crashed.db"
    rng = random.Random(20261123)
    kills = 0
    partial = 0  # kills that left some, not all, documents written
    for attempt in range(5):
        if attempt % 2 == 0:
            # after its first commit, so some kills land mid-run on any host, slow or fast
            proc = run_index(docs, db, minilm_path, "--progress")
            wait_for_a_commit(proc)
            time.sleep(rng.uniform(0.0, 0.5))
        else:
            proc = run_index(docs, db, minilm_path)
            # a slice of the clean run's time, so every run is cut short somewhere different
            time.sleep(rng.uniform(0.3, max(0.6, clean_seconds / 6)))
        if proc.poll() is None:
            proc.send_signal(signal.SIGKILL)
            kills += 1
        proc.wait(timeout=60)
        if db.exists():  # consistent after every kill: no orphans, integrity ok
            with Index(db, readonly=True) as index:
                assert all(v == 0 for v in orphans(index).values())
                paths = [r[0] for r in index.store.conn.execute("SELECT path FROM documents")]
                assert len(paths) == len(set(paths))
                partial += 0 < len(paths) < 300
    assert kills >= 3 and partial >= 1
    proc = run_index(docs, db, minilm_path)
    assert proc.wait(timeout=600) == 0
    crashed_rows, crashed_results = snapshot(db, minilm_path, docs)
    assert crashed_rows == clean_rows
    assert crashed_results == clean_results
