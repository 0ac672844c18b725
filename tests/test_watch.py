"""Watch batches through the library (fake embedder): Index.update and Index.watch."""

from __future__ import annotations

import os
import threading
import time
from pathlib import Path

import pytest

from gguf_embed.index import Index
from gguf_embed.testing import FakeEngine
from gguf_embed.watch import WatchEvent

from .test_index import orphans


def names(index: Index, root: Path) -> list[str]:
    return sorted(os.path.relpath(p, root) for p in index.store.documents())


def chunk_ids(index: Index, path: Path) -> list[int]:
    return [r[0] for r in index.store.conn.execute(
        "SELECT c.id FROM chunks c JOIN documents d ON d.id = c.doc_id WHERE d.path = ? "
        "ORDER BY c.seq", (str(path),))]


@pytest.fixture()
def tree(tmp_path: Path) -> tuple[Index, Path]:
    root = tmp_path / "docs"
    (root / "sub").mkdir(parents=True)
    (root / "a.md").write_text("# Alpha\n\napples and apricots\n")
    (root / "sub" / "b.md").write_text("# Beta\n\nbananas and blueberries\n")
    (root / "c.log").write_text("a log line about cherries\n")
    index = Index(tmp_path / "i.db", FakeEngine())
    index.add([root])
    yield index, root
    index.close()


def test_create_edit_delete(tree: tuple[Index, Path]) -> None:
    index, root = tree
    (root / "new.md").write_text("dates and durians\n")
    (root / "a.md").write_text("# Alpha\n\napples, apricots and avocados\n")
    os.remove(root / "c.log")
    s = index.update([root / "new.md", root / "a.md", root / "c.log"], [root])
    assert (s.added, s.updated, s.removed) == (1, 1, 1)
    assert names(index, root) == ["a.md", "new.md", "sub/b.md"]
    assert index.search("avocados", mode="keyword")[0].path == str(root / "a.md")
    assert orphans(index) == dict.fromkeys(orphans(index), 0)


def test_rename_and_folder_move_reuse_vectors(tree: tuple[Index, Path]) -> None:
    index, root = tree
    before = chunk_ids(index, root / "sub" / "b.md")
    os.rename(root / "sub", root / "moved")
    engine = index.engine
    calls = len(engine.calls)
    s = index.update([root / "sub", root / "moved"], [root])
    assert (s.moved, s.added, s.removed) == (1, 0, 0)
    assert chunk_ids(index, root / "moved" / "b.md") == before  # same rows, not re-embedded
    assert len(engine.calls) == calls
    assert names(index, root) == ["a.md", "c.log", "moved/b.md"]


def test_atomic_save_through_a_temp_file(tree: tuple[Index, Path]) -> None:
    index, root = tree
    tmp = root / ".a.md.swp"
    tmp.write_text("# Alpha\n\napples and elderberries\n")
    os.replace(tmp, root / "a.md")
    s = index.update([tmp, root / "a.md"], [root])
    assert (s.updated, s.added, s.removed) == (1, 0, 0)
    assert names(index, root) == ["a.md", "c.log", "sub/b.md"]
    assert index.search("elderberries", mode="keyword")[0].path == str(root / "a.md")


def test_gitignore_edits_drop_and_bring_back_files(tree: tuple[Index, Path]) -> None:
    index, root = tree
    (root / ".gitignore").write_text("*.log\nsub/\n")
    s = index.update([root / ".gitignore"], [root])
    assert s.removed == 2
    assert names(index, root) == [".gitignore", "a.md"]
    (root / "sub" / "later.md").write_text("figs\n")  # inside an ignored folder
    (root / "more.log").write_text("grapes\n")
    s = index.update([root / "sub" / "later.md", root / "more.log"], [root])
    assert (s.added, s.removed) == (0, 0)
    (root / ".gitignore").write_text("*.log\n")
    s = index.update([root / ".gitignore"], [root])
    assert names(index, root) == [".gitignore", "a.md", "sub/b.md", "sub/later.md"]


def test_nested_gitignore_and_always_skipped_folders(tree: tuple[Index, Path]) -> None:
    index, root = tree
    (root / "sub" / ".gitignore").write_text("secret.md\n")
    (root / "sub" / "secret.md").write_text("hidden\n")
    (root / ".git").mkdir()
    (root / ".git" / "HEAD").write_text("ref: refs/heads/main\n")
    s = index.update([root / "sub" / ".gitignore", root / "sub" / "secret.md",
                      root / ".git" / "HEAD"], [root])
    assert "sub/secret.md" not in names(index, root)
    assert ".git/HEAD" not in names(index, root)
    assert s.removed == 0


def test_scopes_are_the_outermost_changed_paths() -> None:
    from gguf_embed.watch import _outermost

    assert _outermost({"/r/a", "/r/a-b", "/r/a/c", "/r/a-b/d/e", "/r/ab"}) == [
        "/r/a", "/r/a-b", "/r/ab"]


def test_the_index_file_itself_is_never_indexed(tmp_path: Path) -> None:
    root = tmp_path
    (root / "a.md").write_text("apples\n")
    with Index(root / "i.db", FakeEngine()) as index:
        index.add([root])
        s = index.update([root / "i.db", root / "i.db-wal"], [root])
        assert (s.added, s.updated) == (0, 0)
        assert names(index, root) == ["a.md"]


class Interrupting(FakeEngine):
    """Raises KeyboardInterrupt on the second embedding call: Ctrl-C in the middle of a batch."""

    def __init__(self) -> None:
        super().__init__()
        self.armed = False

    def encode(self, texts, **kwargs):  # type: ignore[no-untyped-def]
        if self.armed and len(self.calls) >= 1:
            raise KeyboardInterrupt
        return super().encode(texts, **kwargs)


def test_interrupt_mid_batch_rolls_back_and_the_next_run_catches_up(tmp_path: Path) -> None:
    root = tmp_path / "docs"
    root.mkdir()
    (root / "keep.md").write_text("kept\n")
    engine = Interrupting()
    with Index(tmp_path / "i.db", engine) as index:
        index.add([root])
        before = names(index, root)
        changed = []
        for i in range(200):  # several flushes (64 chunks each) in one batch
            path = root / f"n{i:03}.md"
            path.write_text(f"note {i} " + "word " * 20 + "\n")
            changed.append(path)
        engine.calls.clear()
        engine.armed = True
        with pytest.raises(KeyboardInterrupt):
            index.update(changed, [root])
        assert names(index, root) == before  # all or nothing: the batch is rolled back
        assert orphans(index) == dict.fromkeys(orphans(index), 0)
        engine.armed = False
        s = index.add([root])  # the next run's catch-up
        assert s.added == 200
        assert len(names(index, root)) == 201


def test_index_watch_in_a_thread_with_stop_event(tmp_path: Path) -> None:
    root = tmp_path / "docs"
    root.mkdir()
    (root / "a.md").write_text("apples\n")
    events: list[WatchEvent] = []
    stop = threading.Event()
    with Index(tmp_path / "i.db", FakeEngine()) as index:
        thread = threading.Thread(target=index.watch, args=([root], stop, events.append),
                                  kwargs={"step_ms": 50}, daemon=True)
        thread.start()
        wait_for(lambda: any(e.kind == "catch-up" for e in events))
        (root / "b.md").write_text("bananas\n")
        wait_for(lambda: any(e.kind == "batch" for e in events))
        stop.set()
        thread.join(timeout=10)
        assert not thread.is_alive()
        batch = next(e for e in events if e.kind == "batch")
        assert batch.summary is not None and batch.summary.added == 1
        assert str(root / "b.md") in batch.paths
    with Index(tmp_path / "i.db", readonly=True) as reader:
        assert names(reader, root) == ["a.md", "b.md"]


def test_watching_a_missing_path_is_a_clear_error(tmp_path: Path) -> None:
    from gguf_embed.errors import InputError

    with Index(tmp_path / "i.db", FakeEngine()) as index, \
            pytest.raises(InputError, match="not found"):
        index.watch([tmp_path / "nope"], threading.Event())


def wait_for(condition, timeout: float = 20.0) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out waiting"
        time.sleep(0.05)
