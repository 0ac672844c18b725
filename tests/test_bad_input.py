"""Hostile and careless input against the library: missing or unreadable paths, odd file names,
deep trees, encrypted PDFs, one-line files, foreign SQLite files, read-only folders.  Nothing is
lost, nothing crashes: each case is an error before anything changes, or a skip with a reason.

The CLI, server and concurrency cases are in test_bad_input_cli.py, test_bad_input_server.py
and test_writers.py.  Add the next probe's cases here.
"""

from __future__ import annotations

import contextlib
import encodings.utf_8_sig  # noqa: F401  (loaded before any switch to an unprivileged user)
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import apsw
import pytest
import sqlite_vec

from gguf_embed.chunking import ChunkSettings, chunk
from gguf_embed.errors import GgufEmbedError, InputError
from gguf_embed.extract import Extracted, Skip, extract
from gguf_embed.index import Index
from gguf_embed.testing import FakeEngine
from gguf_embed.walk import Found, walk

NOBODY = 65534


def write_docs(folder: Path, names: dict[str, str]) -> Path:
    for name, text in names.items():
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        (folder / name).write_text(text)
    return folder


def documents(db: Path) -> list[str]:
    with Index(db, readonly=True) as index:
        return sorted(index.store.documents())


@pytest.fixture
def shared_tmp() -> Iterator[Path]:
    """A folder an unprivileged user can work in (pytest's tmp_path is private to root)."""
    folder = Path(tempfile.mkdtemp(prefix="gguf-embed-bad-"))
    os.chmod(folder, 0o777)
    try:
        yield folder
    finally:
        for root, dirs, _ in os.walk(folder):
            for d in dirs:
                os.chmod(os.path.join(root, d), 0o755)
        shutil.rmtree(folder, ignore_errors=True)


_KEEP: list[apsw.Connection] = []


def _keep_extensions_loaded() -> None:
    """Load sqlite-vec once as ourselves, in a connection never closed: the dynamic loader then
    hands the loaded library to every later connection by its path, without opening the file.
    'nobody' could not open it from a clone in a folder only its owner may enter (mktemp -d,
    /root), where every test acting as 'nobody' failed."""
    if not _KEEP:
        conn = apsw.Connection(":memory:")
        conn.enable_load_extension(True)
        conn.load_extension(sqlite_vec.loadable_path())
        _KEEP.append(conn)


@contextlib.contextmanager
def permissions_apply() -> Iterator[None]:
    """Permission bits bind root too for the duration: as root, act as 'nobody' (effective
    ids only, restored after).  A normal user is already bound by them."""
    if os.geteuid() != 0:
        yield
        return
    _keep_extensions_loaded()
    os.setegid(NOBODY)
    os.seteuid(NOBODY)
    try:
        yield
    finally:
        os.seteuid(0)
        os.setegid(0)


# ---------------------------------------------------------------- 1. missing roots remove nothing
def test_missing_root_is_an_error_and_removes_nothing(tmp_path: Path) -> None:
    docs = write_docs(tmp_path / "docs", {"a.md": "alpha", "b.md": "beta", "c/d.md": "delta"})
    db = tmp_path / "i.db"
    with Index(db, FakeEngine()) as index:
        assert index.add([docs]).added == 3
    docs.rename(tmp_path / "renamed")
    from gguf_embed.errors import PathError

    with Index(db, FakeEngine()) as index, pytest.raises(PathError) as info:
        index.add([docs])
    assert str(docs) in str(info.value) and "not found" in str(info.value)
    assert "--prune-missing" in str(info.value)
    assert len(documents(db)) == 3  # nothing removed
    with Index(db, FakeEngine()) as index:  # asked for: today's behaviour
        summary = index.add([docs], prune_missing=True)
    assert summary.removed == 3 and documents(db) == []


def test_an_empty_root_that_held_documents_is_an_unmounted_drive(tmp_path: Path) -> None:
    docs = write_docs(tmp_path / "mnt", {"a.md": "alpha", "b.md": "beta"})
    db = tmp_path / "i.db"
    with Index(db, FakeEngine()) as index:
        index.add([docs])
    for f in docs.iterdir():
        f.unlink()  # the mount point is still there, empty
    with Index(db, FakeEngine()) as index, pytest.raises(InputError, match="unmounted"):
        index.add([docs])
    assert len(documents(db)) == 2


def test_files_vanished_inside_an_existing_root_are_removed(tmp_path: Path) -> None:
    docs = write_docs(tmp_path / "docs", {"a.md": "alpha", "b.md": "beta"})
    db = tmp_path / "i.db"
    with Index(db, FakeEngine()) as index:
        index.add([docs])
        (docs / "a.md").unlink()
        assert index.add([docs]).removed == 1
    assert documents(db) == [str(docs / "b.md")]


def test_unreadable_root_is_an_error(shared_tmp: Path) -> None:
    db = shared_tmp / "i.db"
    with permissions_apply():
        docs = write_docs(shared_tmp / "docs", {"a.md": "alpha", "b.md": "beta"})
        with Index(db, FakeEngine()) as index:
            index.add([docs])
        os.chmod(docs, 0)
        try:
            with Index(db, FakeEngine()) as index, pytest.raises(InputError,
                                                                 match="unreadable"):
                index.add([docs])
        finally:
            os.chmod(docs, 0o755)
        assert len(documents(db)) == 2


@pytest.mark.parametrize("mode", [0, 0o444, 0o111])  # nothing; list only; enter only
def test_unreadable_subfolder_and_its_gitignore_are_skipped(shared_tmp: Path, mode: int) -> None:
    docs = shared_tmp / "docs"
    with permissions_apply():
        write_docs(docs, {"a.md": "alpha", "sub/b.md": "beta", "sub/secret.txt": "pw",
                          "sub/.gitignore": "secret.txt\n"})
        db = shared_tmp / "i.db"
        with Index(db, FakeEngine()) as index:
            assert index.add([docs]).added == 3  # a.md, sub/b.md, sub/.gitignore
            os.chmod(docs / "sub", mode)
            try:
                summary = index.add([docs])
            finally:
                os.chmod(docs / "sub", 0o755)
        assert summary.removed == 0 and summary.unchanged == 1
        assert any(str(docs / "sub") in path and "unreadable" in reason
                   for path, reason in summary.skipped), summary.skipped
        assert str(docs / "sub" / "secret.txt") not in documents(db)
        assert len(documents(db)) == 3  # what was under it stays


def test_unreadable_gitignore_skips_its_folder(shared_tmp: Path) -> None:
    docs = shared_tmp / "docs"
    with permissions_apply():
        write_docs(docs, {"a.md": "alpha", "sub/b.md": "beta", "sub/.env": "TOKEN=1",
                          "sub/.gitignore": ".env\n"})
        os.chmod(docs / "sub" / ".gitignore", 0)
        with Index(shared_tmp / "i.db", FakeEngine()) as index:
            summary = index.add([docs])
    assert summary.added == 1  # only a.md: without its rules, sub/ could leak .env
    assert any(".gitignore" in p and "unreadable" in r for p, r in summary.skipped)


# ---------------------------------------------------------------- 3. odd names, deep trees, PDFs
def test_non_utf8_file_name_is_kept_losslessly(tmp_path: Path) -> None:
    docs = tmp_path / "docs"
    docs.mkdir()
    raw = os.path.join(os.fsencode(docs), b"caf\xe9 menu.md")
    with open(raw, "wb") as fh:
        fh.write(b"espresso and croissant")
    write_docs(docs, {"ok.md": "tea and biscuits"})
    db = tmp_path / "i.db"
    with Index(db, FakeEngine()) as index:
        summary = index.add([docs])
        assert summary.added == 2 and not summary.failed
        hit = index.search("espresso croissant", k=1)[0]
        assert os.fsencode(hit.path) == raw and os.path.exists(hit.path)
        again = index.add([docs])  # found again under the same name: nothing to do
        assert again.unchanged == 2 and again.added == again.removed == 0
        os.remove(raw)
        assert index.add([docs]).removed == 1
    assert documents(db) == [str(docs / "ok.md")]


def test_folders_nested_1100_deep(tmp_path: Path) -> None:
    depth = 1100  # past Python's recursion limit; made and removed without recursion
    fd = os.open(tmp_path, os.O_RDONLY)
    for _ in range(depth):
        os.mkdir("d", dir_fd=fd)
        fd, parent = os.open("d", os.O_RDONLY, dir_fd=fd), fd
        os.close(parent)
    os.close(os.open("bottom.md", os.O_WRONLY | os.O_CREAT, 0o644, dir_fd=fd))
    os.close(fd)
    deep = tmp_path / os.path.join(*["d"] * depth)
    (deep / "bottom.md").write_text("the bottom of the tree")
    try:
        found = [f for f in walk([tmp_path / "d"]) if isinstance(f, Found)]
        assert [f.path for f in found] == [deep / "bottom.md"]
        with Index(tmp_path / "i.db", FakeEngine()) as index:
            assert index.add([tmp_path / "d"]).added == 1
    finally:
        (deep / "bottom.md").unlink()
        for level in range(depth, 0, -1):
            os.rmdir(tmp_path / os.path.join(*["d"] * level))


def make_pdf(text: str) -> bytes:
    """A one-page PDF whose text pypdf can extract."""
    stream = f"BT /F1 12 Tf 72 720 Td ({text}) Tj ET".encode()
    objects = [
        b"<< /Type /Catalog /Pages 2 0 R >>",
        b"<< /Type /Pages /Kids [3 0 R] /Count 1 >>",
        b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] /Contents 4 0 R "
        b"/Resources << /Font << /F1 5 0 R >> >> >>",
        b"<< /Length %d >>\nstream\n" % len(stream) + stream + b"\nendstream",
        b"<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica >>",
    ]
    out = bytearray(b"%PDF-1.4\n")
    offsets = []
    for number, body in enumerate(objects, 1):
        offsets.append(len(out))
        out += b"%d 0 obj\n" % number + body + b"\nendobj\n"
    xref = len(out)
    out += b"xref\n0 %d\n0000000000 65535 f \n" % (len(objects) + 1)
    out += b"".join(b"%010d 00000 n \n" % o for o in offsets)
    out += b"trailer\n<< /Size %d /Root 1 0 R >>\nstartxref\n%d\n%%%%EOF\n" % (
        len(objects) + 1, xref)
    return bytes(out)


def encrypt_pdf(data: bytes, *, user: str, algorithm: str) -> bytes:
    import io

    from pypdf import PdfReader, PdfWriter

    writer = PdfWriter(clone_from=PdfReader(io.BytesIO(data)))
    writer.encrypt(user_password=user, owner_password="owner-secret", algorithm=algorithm)
    buffer = io.BytesIO()
    writer.write(buffer)
    return buffer.getvalue()


def test_plain_pdf_helper_is_readable() -> None:
    doc = extract(Path("x.pdf"), make_pdf("plain bread recipe"))
    assert isinstance(doc, Extracted) and "plain bread recipe" in doc.text


@pytest.mark.parametrize("algorithm", ["AES-256", "AES-128", "RC4-128"])
def test_owner_password_only_pdf_is_indexed(algorithm: str) -> None:
    data = encrypt_pdf(make_pdf("sourdough starter notes"), user="", algorithm=algorithm)
    doc = extract(Path("locked.pdf"), data)
    assert isinstance(doc, Extracted), doc
    assert "sourdough starter notes" in doc.text and doc.pages == [1]
    locked = extract(Path("locked.pdf"), encrypt_pdf(make_pdf("x"), user="u",
                                                     algorithm=algorithm))
    assert isinstance(locked, Skip) and locked.reason.startswith("encrypted PDF (needs a password")


def test_encrypted_pdfs_are_skipped_with_a_reason_and_the_run_goes_on(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    docs = tmp_path / "docs"
    docs.mkdir()
    (docs / "user.pdf").write_bytes(encrypt_pdf(make_pdf("private"), user="u",
                                                algorithm="AES-256"))
    (docs / "aes.pdf").write_bytes(encrypt_pdf(make_pdf("public"), user="", algorithm="AES-256"))
    (docs / "ok.md").write_text("a good file")
    # as if the 'cryptography' package were missing: pypdf cannot do AES at all
    import pypdf._encryption as crypt
    from pypdf.errors import DependencyError

    def missing(*args: object, **kwargs: object) -> bytes:
        raise DependencyError("cryptography>=3.1 is required for AES algorithm")

    monkeypatch.setattr(crypt, "aes_cbc_decrypt", missing)
    monkeypatch.setattr(crypt, "aes_ecb_decrypt", missing)
    monkeypatch.setattr(crypt, "aes_ecb_encrypt", missing)
    with Index(tmp_path / "i.db", FakeEngine()) as index:
        summary = index.add([docs])
    reasons = dict(summary.failed)
    assert summary.added == 1
    assert "cryptography" in reasons[str(docs / "aes.pdf")]
    assert reasons[str(docs / "user.pdf")].startswith("encrypted PDF")


# ---------------------------------------------------------------- 2. one long line, linear
def test_splitting_one_long_line_is_linear() -> None:
    """Characters handed to the tokenizer stay a small multiple of the line (the old split
    re-counted the whole rest of the line for every piece: quadratic)."""
    engine = FakeEngine()
    counted = [0]

    def count(text: str) -> int:
        counted[0] += len(text)
        return len(engine.tokenize(text))

    line = "".join(f"v{i}=f({i},'x');" for i in range(2500))  # ~40,000 characters
    doc = Extracted(text=line, lines=[1])
    chunks = chunk(doc, count, ChunkSettings(256, 32))
    assert len(chunks) > 20
    assert all(c.n_tokens == count(c.text) <= 256 for c in chunks)
    assert "".join(c.text for c in chunks) == line  # nothing lost (no spaces to cut at)
    assert counted[0] < 8 * len(line), counted[0] / len(line)  # ~4.3 measured; old: ~100


def test_a_minified_file_is_skipped_by_name_and_the_rest_indexed(tmp_path: Path) -> None:
    """A 20 MB one-line file (a JS bundle, a JSON dump) is skipped at once with the rule named;
    a long-lined file under the limit and the other files are indexed."""
    from gguf_embed.extract import MINIFIED_LINE_CHARS

    docs = tmp_path / "docs"
    docs.mkdir()
    (docs / "bundle.min.js").write_text("var a=1;" * 2_500_000)  # 20 MB, no newline
    (docs / "wide.csv").write_text("x," * (MINIFIED_LINE_CHARS // 2 - 10) + "\nend\n")
    (docs / "note.md").write_text("# Note\n\nAn ordinary page.\n")
    doc = extract(docs / "bundle.min.js")
    assert isinstance(doc, Skip) and not doc.failed
    assert doc.reason.startswith("minified or machine-written (a line of 20,000,000 characters")
    with Index(tmp_path / "i.db", FakeEngine(max_tokens=4096)) as index:
        summary = index.add([docs])
    assert summary.added == 2
    assert [p for p, _ in summary.skipped] == [str(docs / "bundle.min.js")]


def test_a_long_line_with_spaces_is_cut_at_spaces() -> None:
    engine = FakeEngine()
    words = [f"w{i}" for i in range(20_000)]
    doc = Extracted(text=" ".join(words), lines=[1])
    chunks = chunk(doc, lambda t: len(engine.tokenize(t)), ChunkSettings(128, 16))
    assert [w for c in chunks for w in c.text.split(" ")] == words
    assert all(c.n_tokens <= 128 for c in chunks)
    assert sum(c.n_tokens for c in chunks) > 0.85 * 128 * len(chunks)  # pieces are well filled


# ---------------------------------------------------------------- the index file itself
def test_db_under_a_regular_file_is_a_clear_error(tmp_path: Path) -> None:
    (tmp_path / "notes.txt").write_text("a file, not a folder")
    with pytest.raises(GgufEmbedError, match="is a file, not a folder"):
        Index(tmp_path / "notes.txt" / "sub" / "index.db", FakeEngine())


def test_a_foreign_sqlite_file_is_refused_and_left_alone(tmp_path: Path) -> None:
    db = tmp_path / "places.sqlite"
    conn = apsw.Connection(str(db))
    conn.execute("CREATE TABLE moz_places (id INTEGER PRIMARY KEY, url TEXT)")
    conn.close()
    with pytest.raises(GgufEmbedError, match="not a gguf-embed index"):
        Index(db, FakeEngine())
    conn = apsw.Connection(str(db))
    tables = [r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")]
    conn.close()
    assert tables == ["moz_places"]
    assert not (tmp_path / "places.sqlite.lock").exists()


def test_an_index_in_a_read_only_folder_can_be_searched(shared_tmp: Path) -> None:
    with permissions_apply():
        docs = write_docs(shared_tmp / "docs", {"a.md": "alpha beta", "b.md": "gamma delta"})
        folder = shared_tmp / "ro"
        folder.mkdir()
        with Index(folder / "i.db", FakeEngine()) as index:
            index.add([docs])
        os.chmod(folder, 0o555)
        try:
            with Index(folder / "i.db", readonly=True) as index:
                hits = index.search("gamma", mode="keyword")
            with Index(folder / "i.db", FakeEngine(), readonly=True) as index:
                vector_hits = index.search("alpha beta", mode="vector", k=1)
        finally:
            os.chmod(folder, 0o755)
    assert [h.path for h in hits] == [str(docs / "b.md")]
    assert vector_hits[0].path == str(docs / "a.md")


@pytest.mark.parametrize("path,message", [
    ("*" + "a" * 60_000, "characters long"),
    ("/docs/caf\udce9*", "not valid UTF-8"),
])
def test_bad_path_filters_are_input_errors(tmp_path: Path, path: str, message: str) -> None:
    with Index(tmp_path / "i.db", FakeEngine()) as index:
        index.add([write_docs(tmp_path / "docs", {"a.md": "alpha"})])
        with pytest.raises(InputError, match=message):
            index.search("alpha", mode="keyword", path=path)


def test_lone_surrogate_query_is_an_input_error(tmp_path: Path) -> None:
    with Index(tmp_path / "i.db", FakeEngine()) as index:
        index.add([write_docs(tmp_path / "docs", {"a.md": "alpha"})])
        for mode in ("keyword", "hybrid"):
            with pytest.raises(InputError, match="not valid UTF-8"):
                index.search("alpha \ud800", mode=mode)
