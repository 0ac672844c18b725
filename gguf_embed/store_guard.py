"""What the index file is checked for before and while it is written (store, index, merge).

* :func:`open_cache` / :func:`write_cache`: a cache file beside the index, read only if it is a
  regular file (not a link, never a FIFO), written crash-safely (temporary file, fsync, rename),
  starting with its magic and a JSON header (:func:`cache_head`, :func:`read_cache_head`).
* :func:`check_regular`: an index path (or its ``-wal``/``-shm``/``-journal``) that is a FIFO, a
  folder, a device or a socket is refused at once: SQLite would block on a FIFO forever; a side
  file that is a symbolic link is named (SQLite refuses it with a vague message).  So is an
  index named like another's side file (:data:`BESIDE`: ``X.db-wal``, ``X.db.bits``, ...),
  and an index whose side file is an index: the next write to ``X.db`` would overwrite it.
* :func:`write_errors`: the one place where SQLite's disk errors (full disk, file-size limit,
  quota, I/O error, read-only file) become :class:`IndexWriteError`, one line naming the index
  and the cause.  SQLite rolls the transaction back, so the file stays at its last commit.
* :func:`read_errors`: the one place where SQLite's errors that mean the file is damaged (a
  malformed page, not a database) become :class:`IndexDamaged`, and an I/O error while reading
  becomes :class:`IndexFileError`: one line naming the file and what to do.  Every call into an
  :class:`~gguf_embed.index.Index` runs inside it (index.py), and so do opening a file
  (store_open.py, store.py) and reading a shard to merge (merge.py, store_merge.py); nothing is
  written to a damaged file on the way out.
* :func:`count_non_finite`: vectors with NaN or Inf an index holds (a shard is not merged).
* :func:`check_schema`: an index written by a newer schema (a migration this version does not
  know, or a higher recorded version) is :class:`IndexTooNew` for writing.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import stat
import struct
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any, BinaryIO

import apsw

from ._vectors import is_finite_blob
from .errors import IndexDamaged, IndexFileError, IndexTooNew, IndexWriteError, first_line, quoted

SIDE_FILES = ("", "-wal", "-shm", "-journal")
# what is written beside an index X: SQLite's side files, then ours (_lock.py,
# vector_cache_file.py, store_keyword_file.py); an index given one of these names is another
# index's side file, and a walk never indexes them (index_write.rules_for)
BESIDE = {"-wal": "SQLite's write-ahead log", "-shm": "SQLite's shared-memory file",
          "-journal": "SQLite's rollback journal", ".lock": "the write-lock file",
          ".bits": "the search cache", ".keywords": "the keyword cache"}
SQLITE_MAGIC = b"SQLite format 3\0"

_KINDS = ((stat.S_ISDIR, "a folder"), (stat.S_ISFIFO, "a FIFO (named pipe)"),
          (stat.S_ISCHR, "a character device"), (stat.S_ISBLK, "a block device"),
          (stat.S_ISSOCK, "a socket"))


def check_regular(path: str | Path) -> None:
    """Raise :class:`IndexFileError` if the index file or one of SQLite's side files exists
    and is not a regular file (nothing is opened: a FIFO would block), if ``path`` is named
    like another index's side file, or if one of its side files is an index."""
    real = os.path.realpath(path)
    check_name(path, real)
    for suffix in SIDE_FILES:
        name = f"{path}{suffix}"
        if suffix and os.path.islink(side := f"{real}{suffix}"):
            # SQLite refuses it ("unable to open database file"); say what and where
            raise IndexFileError(f"{quoted(side)} is a symbolic link; SQLite never follows "
                                 f"one for the index's side files: remove it if you did not "
                                 f"make it")
        try:
            mode = os.stat(name).st_mode
        except OSError:
            continue  # missing, or unreadable: SQLite says why
        if not stat.S_ISREG(mode):
            kind = next((k for test, k in _KINDS if test(mode)), "not a regular file")
            raise IndexFileError(f"{quoted(name)} is {kind}, not an index file; pass --db "
                                 f"naming a regular file (or a new one)")


def check_name(path: str | Path, real: str | None = None) -> None:
    """Raise :class:`IndexFileError` if ``path`` (or the file it links to) is named like a
    file written beside another index (``X.db-wal``: SQLite takes it for ``X.db``'s log and
    empties it at the next write there), or if a file beside it (``X.db.lock``, ...) is an
    SQLite database: writing this index would overwrite it.  ``real``: ``path``'s realpath,
    when the caller has it."""
    given = os.fspath(path)
    real = os.path.realpath(given) if real is None else real
    for name in [given] if os.path.abspath(given) == real else [given, real]:
        base = os.path.basename(name).lower()  # -WAL is -wal on macOS and Windows
        suffix = next((s for s in BESIDE if base.endswith(s) and len(base) > len(s)), None)
        if suffix:
            owner = name[:-len(suffix)]
            raise IndexFileError(
                f"cannot use {quoted(name)} as an index: a name ending in {suffix!r} is "
                f"{BESIDE[suffix]} of the index {quoted(owner)}, and writing that one would "
                f"overwrite it; pass another name (rename the file if it is an index)")
        for suffix, what in BESIDE.items():
            if _is_sqlite(side := name + suffix):
                raise IndexFileError(
                    f"{quoted(side)} is an SQLite database, not {what} of the index "
                    f"{quoted(name)}, and using that index would overwrite it; rename it "
                    f"(nothing was changed)")


def _is_sqlite(path: str) -> bool:
    """Whether ``path`` is a regular file starting as an SQLite database does (a real
    ``-wal``, ``-journal``, lock or cache file never does); never blocks or follows a link."""
    try:
        if not stat.S_ISREG(os.lstat(path).st_mode):
            return False
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0)
                     | getattr(os, "O_NONBLOCK", 0))
    except OSError:
        return False
    try:
        return os.read(fd, len(SQLITE_MAGIC)) == SQLITE_MAGIC
    except OSError:
        return False
    finally:
        os.close(fd)


def open_cache(path: str | Path) -> BinaryIO:
    """A cache file beside the index (``INDEX.bits``, ``INDEX.keywords``) opened for reading:
    never through a symbolic link, never blocking (a FIFO put there would hang every search),
    and only a regular file; else ``OSError``, and the caller takes the cache as missing (it
    is then written anew by a rename, which replaces a link or a FIFO, never its target)."""
    fd = os.open(path, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_NONBLOCK", 0))
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise OSError(errno.EINVAL, "not a regular file", str(path))
        return os.fdopen(fd, "rb")
    except BaseException:
        os.close(fd)
        raise


CACHE_HEADER = struct.Struct("<16sQ")  # a cache file's magic, then its JSON header's length


def cache_head(magic: bytes, info: dict[str, Any]) -> bytes:
    """The start of a cache file: ``magic``, the length of the JSON ``info``, then ``info``."""
    header = json.dumps(info).encode()
    return CACHE_HEADER.pack(magic, len(header)) + header


def read_cache_head(f: BinaryIO, magic: bytes, limit: int) -> dict[str, Any] | None:
    """What :func:`cache_head` wrote, read from the start of ``f`` (left just after it), or
    None for another kind of file or a header longer than ``limit`` bytes; a damaged header
    raises ``ValueError`` or ``struct.error``."""
    found, size = CACHE_HEADER.unpack(f.read(CACHE_HEADER.size))
    if found != magic or size > limit:
        return None
    info = json.loads(f.read(size))
    return info if isinstance(info, dict) else None


def write_cache(path: Path, parts: Iterable[bytes | memoryview]) -> bool:
    """Write a cache file beside the index crash-safely: a temporary file in the same folder,
    fsynced, renamed over ``path`` (replacing whatever is there, a link or fifo included, never
    its target), then the folder fsynced; False when the folder cannot be written."""
    import tempfile  # writers only: a search that reads a cache never saves one

    try:
        fd, tmp = tempfile.mkstemp(prefix=path.name + ".", suffix=".tmp", dir=path.parent)
    except OSError:
        return False
    try:
        with os.fdopen(fd, "wb") as out:
            for part in parts:
                out.write(part)
            out.flush()
            os.fsync(out.fileno())
        os.replace(tmp, path)
        with contextlib.suppress(OSError):
            dirfd = os.open(path.parent, os.O_RDONLY)
            try:
                os.fsync(dirfd)
            finally:
                os.close(dirfd)
    except OSError:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        return False
    return True


def disk_cause(exc: apsw.Error, conn: apsw.Connection | None = None) -> str:
    """What an SQLite write error means, in words (from the OS error behind it when known)."""
    code = 0
    if conn is not None:
        with contextlib.suppress(Exception):
            code = int(conn.system_errno)
    if isinstance(exc, apsw.FullError) or code == errno.ENOSPC:
        return "the disk is full"
    if code == errno.EFBIG:
        return "the file-size limit was reached (File too large: see ulimit -f)"
    if code == getattr(errno, "EDQUOT", -1):
        return "the disk quota is exceeded"
    if isinstance(exc, apsw.ReadOnlyError) or code in (errno.EROFS, errno.EACCES, errno.EPERM):
        return "the file or its folder is read-only"
    if code:
        return f"{os.strerror(code).lower()} (errno {code})"
    return "a disk I/O error (a file-size limit, a full or failing disk?)"


WRITE_ERRORS = (apsw.FullError, apsw.IOError, apsw.ReadOnlyError)


@contextlib.contextmanager
def write_errors(path: str | Path, conn: apsw.Connection | None = None) -> Iterator[None]:
    """SQLite's disk errors inside the block as :class:`IndexWriteError` naming ``path``."""
    try:
        yield
    except WRITE_ERRORS as exc:
        raise IndexWriteError(
            f"cannot write {quoted(path)}: {disk_cause(exc, conn)}; what was written before "
            f"is kept, and running the same command again goes on from there") from exc


DAMAGE_ERRORS = (apsw.CorruptError, apsw.NotADBError)  # the file is damaged (or not SQLite)
READ_ERRORS = (apsw.IOError, apsw.FullError)  # a failing disk; a full one for a sort's temp files


def damaged(path: str | Path, exc: apsw.Error, *, what: str = "index") -> IndexFileError:
    """The error for a file SQLite found damaged: :class:`IndexDamaged` naming it and what to
    do, or :class:`IndexFileError` when it is not an SQLite file at all (``--db notes.txt``)."""
    name = quoted(path)
    if not _is_sqlite(os.fspath(path)):
        return IndexFileError(f"{what} {name} is not a gguf-embed index (not an SQLite "
                              f"database); name an index file (nothing was written to it)")
    return IndexDamaged(
        f"{what} {name} is damaged (SQLite: {first_line(exc, empty=type(exc).__name__)}); "
        f"nothing more is written to it: restore it from a backup, or build a new index of "
        f"your files into another file (gguf-embed index --db NEW.db FOLDER); 'sqlite3 "
        f"{name} .recover' may save what is left of it", path=os.fspath(path))


@contextlib.contextmanager
def read_errors(path: str | Path, conn: apsw.Connection | None = None, *,
                what: str = "index") -> Iterator[None]:
    """SQLite's errors inside the block that mean the file ``path`` is damaged, as
    :class:`IndexDamaged` (see :func:`damaged`); an I/O error (a failing disk, a full one for
    the temporary files of a sort) as :class:`IndexFileError`.  Errors already mapped (a
    :func:`write_errors` inside) pass through; nothing is written here."""
    try:
        yield
    except DAMAGE_ERRORS as exc:
        raise damaged(path, exc, what=what) from exc
    except READ_ERRORS as exc:
        raise IndexFileError(f"cannot read {what} {quoted(path)}: {disk_cause(exc, conn)}; "
                             f"check the disk, then try again") from exc


def check_schema(conn: apsw.Connection, path: str | Path, applied: set[str],
                 known: list[str], version: int) -> None:
    """Raise :class:`IndexTooNew` if the index records a migration this version does not know
    or a schema version above ``version``."""
    recorded = 0
    with contextlib.suppress(apsw.Error, ValueError, TypeError):
        row = conn.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone()
        recorded = int(row[0]) if row else 0
    unknown = sorted(applied - set(known))
    written = max(recorded, len(applied))
    if unknown or recorded > version:
        what = f" (it records migration {', '.join(unknown)})" if unknown else ""
        raise IndexTooNew(
            f"index {quoted(path)} was written by gguf-embed schema {written}, this version "
            f"knows schema {version}{what}: upgrade gguf-embed to write it (searching it may "
            f"still work)", written=written, known=version)


def count_non_finite(conn: apsw.Connection) -> int:
    """How many stored vectors hold NaN or Inf (an older version could store them)."""
    if conn.execute("SELECT 1 FROM sqlite_master WHERE name = 'chunk_vectors'").fetchone() \
            is None:
        return 0
    conn.create_scalar_function("gguf_embed_finite", _finite, 1, deterministic=True)
    (count,), = conn.execute(
        "SELECT count(*) FROM chunk_vectors WHERE NOT gguf_embed_finite(embedding)")
    return int(count)


def _finite(*values: Any) -> int:
    return int(isinstance(values[0], bytes) and is_finite_blob(values[0]))
