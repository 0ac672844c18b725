"""Opening the index file: SQLite through APSW with sqlite-vec loaded (and loading turned
off again), WAL for writers, and the folder it goes into."""

from __future__ import annotations

import functools
import importlib.util
import os
import urllib.parse
from pathlib import Path

import apsw

from .errors import IndexFileError
from .store_guard import DAMAGE_ERRORS, check_regular, damaged


def make_parent(path: Path) -> None:
    """Create the folder an index file goes into, or say in one line why it cannot be."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        blocker = next((a for a in path.parents if a.exists() and not a.is_dir()), None)
        why = f"{blocker} is a file, not a folder" if blocker else (exc.strerror or str(exc))
        raise IndexFileError(f"cannot create the index {path}: {why}; pass another --db") from exc


def connect(path: str | Path, *, readonly: bool = False) -> apsw.Connection:
    check_regular(path)  # a FIFO would block the open forever
    try:
        try:
            conn = _open(path, readonly=readonly, immutable=False)
        except (apsw.CantOpenError, apsw.ReadOnlyError):
            # A WAL index in a folder we cannot write (no -shm can be made): with no -wal file
            # there is nothing beyond the main file to read, so read that as immutable.
            if not readonly or os.path.exists(str(path) + "-wal"):
                raise
            conn = _open(path, readonly=True, immutable=True)
    except DAMAGE_ERRORS as exc:  # its header or schema: the file is damaged, or not SQLite
        raise damaged(path, exc) from exc
    except apsw.Error as exc:
        raise IndexFileError(f"cannot open index {path}: {exc}") from exc
    return conn


@functools.cache
def vec_extension() -> str:
    """``sqlite_vec.loadable_path()`` without importing ``sqlite_vec``, whose ``__init__``
    imports the sqlite3 module and numpy.typing (~6 ms of a one-shot search): the
    extension ``vec0`` lies in the package's folder."""
    spec = importlib.util.find_spec("sqlite_vec")
    folders = list(spec.submodule_search_locations or []) if spec is not None else []
    if not folders:
        raise IndexFileError("the sqlite-vec package is not installed; pip install sqlite-vec")
    return os.path.normpath(os.path.join(folders[0], "vec0"))


def probe_extensions() -> str:
    """The sqlite-vec version, once it and FTS5 have worked in a scratch in-memory database
    (for ``gguf-embed doctor``); raises whatever loading them raises."""
    conn = apsw.Connection(":memory:")
    try:
        conn.enable_load_extension(True)
        conn.load_extension(vec_extension())
        (version,), = conn.execute("SELECT vec_version()")
        conn.execute("CREATE VIRTUAL TABLE t USING fts5(x)")
        return str(version)
    finally:
        conn.close()


def _open(path: str | Path, *, readonly: bool, immutable: bool) -> apsw.Connection:
    flags = apsw.SQLITE_OPEN_READONLY if readonly else (
        apsw.SQLITE_OPEN_READWRITE | apsw.SQLITE_OPEN_CREATE)
    name = str(path)
    if immutable:
        flags |= apsw.SQLITE_OPEN_URI
        name = "file:" + urllib.parse.quote(os.fsencode(os.path.abspath(name))) + "?immutable=1"
    conn = apsw.Connection(name, flags=flags)
    try:
        conn.enable_load_extension(True)
        conn.load_extension(vec_extension())
        conn.enable_load_extension(False)
        conn.setbusytimeout(10_000)
        if not readonly:
            conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA foreign_keys=ON")
        conn.execute("PRAGMA synchronous=NORMAL")
        if readonly:  # reading the schema finds a file that cannot be read now, not later
            conn.execute("SELECT count(*) FROM sqlite_master").fetchall()
    except apsw.Error:
        conn.close()
        raise
    return conn
