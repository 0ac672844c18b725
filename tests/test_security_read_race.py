"""Reading indexed files from the attacker's side, at the moment of the read: the attacker can
write inside the indexed folder and swaps a folder on the way, or the file itself, for a
symlink to a secret outside.  MCP `get` is swapped under at every point where it touches the
disk (before each lookup, open, stat, readlink and read it makes, one swap per call); an index
run between its walk and its reads.  Whenever the swap comes, the secret's text never appears
in what `get` returns nor in the index; a fifo in place of a document does not hang `get`; and
what the symlink rule allows (links followed with --follow-symlinks, a root named by a link) is
still served."""

from __future__ import annotations

import builtins
import io
import os
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from gguf_embed import Index
from gguf_embed.errors import InputError
from gguf_embed.mcp_server import Service
from gguf_embed.testing import FakeEngine
from gguf_embed.walk import Bounds

SECRET = "wombatxylophone"  # a word no other test text has: found only if a secret leaked
# every way `get` (and the index it opens, and os.path.realpath) looks at the disk from Python
LOOKUPS = [(os, "open"), (os, "stat"), (os, "lstat"), (os, "readlink"), (os, "fstat"),
           (os, "read"), (io, "open"), (builtins, "open")]


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    """docs/sub/notes.md (indexed) and, outside docs/, secrets/notes.md (the same name)."""
    (tmp_path / "docs" / "sub").mkdir(parents=True)
    (tmp_path / "docs" / "sub" / "notes.md").write_text("# notes\n\nrotate the logs daily\n")
    (tmp_path / "secrets").mkdir()
    (tmp_path / "secrets" / "notes.md").write_text(f"private key {SECRET}\n")
    with Index(tmp_path / "i.db", FakeEngine()) as index:
        assert index.add([tmp_path / "docs"]).added == 1
    return tmp_path


def swap_folder(tree: Path) -> tuple[Callable[[], None], Callable[[], None]]:
    sub = tree / "docs" / "sub"

    def swap() -> None:
        sub.rename(tree / "sub.away")
        sub.symlink_to(tree / "secrets")

    def restore() -> None:
        sub.unlink()
        (tree / "sub.away").rename(sub)
    return swap, restore


def swap_file(tree: Path) -> tuple[Callable[[], None], Callable[[], None]]:
    notes = tree / "docs" / "sub" / "notes.md"

    def swap() -> None:
        notes.rename(tree / "notes.away")
        notes.symlink_to(tree / "secrets" / "notes.md")

    def restore() -> None:
        notes.unlink()
        (tree / "notes.away").rename(notes)
    return swap, restore


@contextmanager
def swapping_at(call: int, swap: Callable[[], None], monkeypatch: pytest.MonkeyPatch
                ) -> Iterator[list[int]]:
    """Count the disk lookups made inside the block; run ``swap`` just before lookup
    number ``call`` (never, if there are fewer).  Yields [lookups made, swapped or not]."""
    seen = [0, 0]

    def counted(real: Callable[..., Any]) -> Callable[..., Any]:
        def lookup(*args: Any, **kwargs: Any) -> Any:
            if seen[0] == call:
                seen[1] = 1
                swap()
            seen[0] += 1
            return real(*args, **kwargs)
        return lookup

    with monkeypatch.context() as patch:
        for module, name in LOOKUPS:
            patch.setattr(module, name, counted(getattr(module, name)))
        yield seen


@pytest.mark.parametrize("swapper", [swap_folder, swap_file])
def test_a_swap_at_any_point_never_reads_the_secret(
        tree: Path, swapper: Callable[[Path], tuple[Callable[[], None], Callable[[], None]]],
        monkeypatch: pytest.MonkeyPatch) -> None:
    service = Service(FakeEngine(), tree / "i.db", model_name="fake")
    path = str(tree / "docs" / "sub" / "notes.md")
    swap, restore = swapper(tree)
    service.get(path)  # a first open reads less (no -wal/-shm yet): count a later call's
    with swapping_at(-1, swap, monkeypatch) as seen:
        assert "rotate the logs" in service.get(path)["text"]
    lookups = seen[0]
    assert lookups >= 3, lookups
    refused = served = 0
    for call in range(lookups):
        with swapping_at(call, swap, monkeypatch) as seen:
            try:
                text = service.get(path)["text"]
            except InputError as exc:
                assert SECRET not in str(exc), call
                assert str(tree / "secrets") not in str(exc), call  # where it leads: not told
                refused += 1
            else:
                assert SECRET not in text, f"the secret was read after a swap at lookup {call}"
                assert "rotate the logs" in text, call
                served += 1
        assert seen[1], call
        restore()
    # a swap before the file is opened is seen (refused); one after it changes nothing
    assert refused and served, (refused, served)


def test_a_fifo_in_place_of_a_document_does_not_hang_get(tree: Path) -> None:
    notes = tree / "docs" / "sub" / "notes.md"
    notes.unlink()
    os.mkfifo(notes)
    service = Service(FakeEngine(), tree / "i.db", model_name="fake")
    outcome: list[BaseException | dict[str, Any]] = []

    def call() -> None:
        try:
            outcome.append(service.get(str(notes)))
        except BaseException as exc:  # handed to the test thread
            outcome.append(exc)

    reader = threading.Thread(target=call, daemon=True)
    reader.start()
    reader.join(60)  # a generous bound on a call that makes no wait of its own
    hung = reader.is_alive()
    if hung:  # let the blocked open go on (a writer comes and goes), so nothing is left behind
        os.close(os.open(notes, os.O_WRONLY | os.O_NONBLOCK))
        reader.join(60)
    assert not hung, "get blocked opening a fifo"
    assert isinstance(outcome[0], InputError), outcome
    assert str(outcome[0]) == f"cannot read {notes}: not a regular file"


def test_links_the_rule_allows_are_still_served(tree: Path) -> None:
    """Same policy as before: a link followed with --follow-symlinks (its target recorded),
    a root named by a symlink, a link inside the folders to a file inside them."""
    from gguf_embed.safe_open import Outside, read_inside

    docs = tree / "docs"
    (docs / "vault").symlink_to(tree / "secrets")
    (tree / "named").symlink_to(docs)
    (docs / "again.md").symlink_to(docs / "sub" / "notes.md")
    with Index(tree / "i.db", FakeEngine()) as index:
        index.add([docs], follow_symlinks=True)
        index.add([tree / "named"])
        index.store.set_meta({"links": {str(docs): [str(tree / "secrets")]}})
    service = Service(FakeEngine(), tree / "i.db", model_name="fake")
    assert SECRET in service.get(str(docs / "vault" / "notes.md"))["text"]  # chosen by the user
    assert "rotate" in service.get(str(tree / "named" / "sub" / "notes.md"))["text"]
    bounds = Bounds([docs])
    assert b"rotate" in read_inside(str(docs / "again.md"), bounds, max_bytes=1000).data
    with pytest.raises(Outside):
        read_inside(str(docs / "vault" / "notes.md"), bounds, max_bytes=1000)


def test_the_walk_refuses_loops_folders_and_relative_escapes(tree: Path) -> None:
    from gguf_embed.safe_open import NotRegular, Outside, read_inside

    docs = tree / "docs"
    bounds = Bounds([docs])
    (docs / "loop").symlink_to("loop")
    with pytest.raises(OSError, match="symbolic links"):
        read_inside(str(docs / "loop" / "x.md"), bounds, max_bytes=1000)
    (docs / "dir.md").symlink_to("sub")
    with pytest.raises(NotRegular):
        read_inside(str(docs / "dir.md"), bounds, max_bytes=1000)
    (docs / "sub" / "up.md").symlink_to("../../secrets/notes.md")  # relative, out of docs
    with pytest.raises(Outside):
        read_inside(str(docs / "sub" / "up.md"), bounds, max_bytes=1000)
    (docs / "sub" / "down.md").symlink_to("../sub/./notes.md")  # relative, inside
    found = read_inside(str(docs / "sub" / "down.md"), bounds, max_bytes=1000)
    assert found.real == os.path.realpath(docs / "sub" / "notes.md")


@pytest.mark.parametrize("swapper", [swap_folder, swap_file])
def test_an_index_run_never_reads_through_a_link_swapped_in_after_the_walk(
        tree: Path, swapper: Callable[[Path], tuple[Callable[[], None], Callable[[], None]]]
        ) -> None:
    """The walk saw a plain folder and file; before the read (``on_found``: the walk is done)
    the attacker swaps one for a link out of docs/, and swaps it back after the run, so that
    the serving rule (the real path now) would let the text through."""
    docs = tree / "docs"
    (docs / "sub" / "notes.md").write_text("# notes\n\nrotate the logs weekly now\n")
    swap, restore = swapper(tree)
    with Index(tree / "i.db", FakeEngine()) as index:
        summary = index.add([docs], on_found=lambda files: swap())
        restore()
        assert index.search(SECRET, k=5, mode="keyword") == []
        assert summary.added == 0 and summary.updated == 0, summary.to_dict()
        assert [reason for _, reason in summary.skipped] == [
            "leads outside the indexed folders through a symlink (changed while indexing): "
            "not followed"]
        assert "rotate the logs daily" in index.search("rotate", k=1, mode="keyword")[0].snippet


@pytest.mark.parametrize("secret", [".env", ".ssh/config"])
def test_an_index_run_never_reads_a_credential_file_swapped_in_inside(
        tree: Path, secret: str) -> None:
    """A link to a credential file inside the folder (which the walk skips, or never enters)
    swapped in for a plain file is not read either; a credential file named to index still
    is, and so is a folder of them reached through a link the user chose to follow."""
    docs = tree / "docs"
    (docs / secret).parent.mkdir(exist_ok=True)
    (docs / secret).write_text(f"TOKEN={SECRET}\n")
    notes = docs / "sub" / "notes.md"
    notes.write_text("# notes\n\nrotate the logs weekly now\n")

    def swap() -> None:
        notes.unlink()
        notes.symlink_to(docs / secret)

    with Index(tree / "i.db", FakeEngine()) as index:
        summary = index.add([docs], on_found=lambda files: swap())
        assert index.search(SECRET, k=5, mode="keyword") == []
        assert (str(notes), "holds credentials by convention: not indexed (name the file "
                            "itself to index it)") in summary.skipped
        index.add([docs / secret])
        assert index.search(SECRET, k=5, mode="keyword")


def test_a_followed_link_into_a_folder_of_credentials_is_indexed_as_before(
        tmp_path: Path) -> None:
    docs = tmp_path / "docs"
    docs.mkdir()
    (tmp_path / "home" / ".ssh").mkdir(parents=True)
    (tmp_path / "home" / ".ssh" / "config").write_text(f"Host {SECRET}\n")
    (docs / "keys").symlink_to(tmp_path / "home" / ".ssh")
    with Index(tmp_path / "i.db", FakeEngine()) as index:
        assert index.add([docs], follow_symlinks=True).added == 1
        assert index.search(SECRET, k=5, mode="keyword")
