"""Two writers on one index: one holds the write lock and binds the index's identity; the other
waits for it (saying for whom), then finds the model recorded.  Never "database is locked",
never a file that records one model and holds another's vectors."""

from __future__ import annotations

import multiprocessing
import os
import threading
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from gguf_embed.cli import cli
from gguf_embed.index import Index
from gguf_embed.testing import FakeEngine

from .test_bad_input import write_docs

ROUNDS = 30


def race(workdir: str, me: int, barrier: Any, results: Any) -> None:
    """One racing process: every round, open a fresh index for writing at the same moment as
    the other process and index the same files.  Even rounds: two different models."""
    from gguf_embed.index import Index
    from gguf_embed.testing import FakeEngine

    docs = Path(workdir) / "docs"
    out: list[tuple[str, str, int]] = []
    for r in range(ROUNDS):
        name, dims = ("model-b", 48) if me == 1 and r % 2 == 0 else ("model-a", 64)
        barrier.wait(timeout=60)
        try:
            with Index(Path(workdir) / f"r{r}.db", FakeEngine(dims=dims, name=name)) as index:
                summary = index.add([docs])
            out.append((name, "ok", summary.added))
        except Exception as exc:  # reported to the test, which decides
            out.append((name, f"{type(exc).__name__}: {exc}", 0))
    results.put((me, out))


def test_racing_processes_never_mix_an_index(tmp_path: Path) -> None:
    write_docs(tmp_path / "docs", {"a.md": "alpha beta", "b.md": "gamma", "c.md": "delta"})
    ctx = multiprocessing.get_context("spawn")
    barrier, results = ctx.Barrier(2), ctx.Queue()
    procs = [ctx.Process(target=race, args=(str(tmp_path), me, barrier, results))
             for me in (0, 1)]
    for p in procs:
        p.start()
    outcomes = dict(results.get(timeout=300) for _ in procs)
    for p in procs:
        p.join(timeout=60)
        assert p.exitcode == 0
    for r in range(ROUNDS):
        pair = [outcomes[0][r], outcomes[1][r]]
        assert not any("locked" in o[1] for o in pair), pair
        with Index(tmp_path / f"r{r}.db", readonly=True) as index:
            meta = index.meta
            conn = index.store.conn
            sizes = {n for (n,) in conn.execute("SELECT length(embedding) FROM chunk_vectors")}
            (docs,), = conn.execute("SELECT count(*) FROM documents")
        assert sizes == {meta["dims"] * 4}, (pair, meta["model"], sizes)  # never mixed
        assert docs == 3
        winners = [o for o in pair if o[1] == "ok"]
        if pair[0][0] == pair[1][0]:  # one model: both succeed, the files indexed once
            assert len(winners) == 2 and sorted(o[2] for o in pair) == [0, 3], pair
        else:  # two models: the second is refused once the first has bound the index
            assert len(winners) == 1 and winners[0][0] == meta["model"], pair
            loser = next(o for o in pair if o[1] != "ok")
            assert loser[1].startswith("IndexMismatch:") and "--reindex" in loser[1], pair


def test_a_second_writer_waits_for_the_first_and_is_told_whom(tmp_path: Path) -> None:
    db = tmp_path / "i.db"
    holder = Index(db, FakeEngine())
    told: list[int | None] = []
    waited = threading.Event()

    def tell(pid: int | None) -> None:
        told.append(pid)
        waited.set()

    def finish_first() -> None:
        waited.wait(timeout=60)
        holder.add([write_docs(tmp_path / "docs", {"a.md": "alpha"})])
        holder.close()

    thread = threading.Thread(target=finish_first)
    thread.start()
    with Index(db, FakeEngine(), on_wait=tell) as second:  # blocks until the holder closes
        assert second.store.counts()["documents"] == 1  # it sees the first writer's work
    thread.join(timeout=60)
    assert told == [os.getpid()]


def test_a_writer_that_will_not_wait_fails_at_once_naming_the_pid(tmp_path: Path) -> None:
    from gguf_embed.errors import IndexBusy

    with Index(tmp_path / "i.db", FakeEngine()):
        with pytest.raises(IndexBusy, match=f"is being written by PID {os.getpid()}"):
            Index(tmp_path / "i.db", FakeEngine(), wait=False)
        with Index(tmp_path / "i.db", readonly=True) as reader:  # readers never wait
            assert reader.store.counts()["documents"] == 0
    with Index(tmp_path / "i.db", FakeEngine(), wait=False):  # free again
        pass


def test_cli_index_says_it_waits(tmp_path: Path, minilm_path: Path,
                                 monkeypatch: pytest.MonkeyPatch) -> None:
    import gguf_embed._lock as lock

    docs = write_docs(tmp_path / "docs", {"a.md": "alpha"})
    db = tmp_path / "i.db"
    holder = Index(db)  # a writer that has not bound a model yet
    contended = threading.Event()
    read_pid = lock._read_pid

    def spy(fd: int) -> int | None:
        contended.set()
        return read_pid(fd)

    monkeypatch.setattr(lock, "_read_pid", spy)

    def finish_first() -> None:
        contended.wait(timeout=120)
        holder.close()

    thread = threading.Thread(target=finish_first)
    thread.start()
    result = CliRunner().invoke(cli, ["index", str(docs), "--db", str(db), "-m",
                                      str(minilm_path)])
    thread.join(timeout=60)
    assert result.exit_code == 0, result.stderr
    assert result.stderr.startswith(f"waiting: index {db} is being written by PID "
                                    f"{os.getpid()}; this run starts when it finishes")
    assert "added 1" in result.stdout
