"""One writer per index: an OS file lock on ``INDEX.lock`` beside the index file.

Binding an index's identity (model, dims, chunking) and writing its vectors happen while this
lock is held, so two writers can never both pass the model check on a new file and leave it
mixed.  The lock is the kernel's (``flock`` / ``msvcrt.locking``): a killed writer releases it
at once, and a leftover ``.lock`` file means nothing.  The holder writes its PID into the file
so that a second writer can say whom it waits for, and removes the file before it lets go (a
waiter that gets the lock checks that it locked the file now at that path).  Readers never take
it (WAL lets them read while a run writes).

Whoever can write the index's folder can plant something at the lock's path: the file is opened
without following a symlink (``O_NOFOLLOW``), without truncating (``O_CREAT`` alone), and
refused unless it is a regular file with one name; the PID is written only into a file this
user owns.  So a link to a victim file never gets it truncated or written.
"""

from __future__ import annotations

import contextlib
import os
import stat
import sys
import time
from collections.abc import Callable
from pathlib import Path

from .errors import IndexBusy, IndexFileError

POLL_SECONDS = 0.05
# never through a symlink, never blocking on a fifo planted at the path
_FLAGS = (os.O_RDWR | os.O_CREAT | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_NONBLOCK", 0)
          | getattr(os, "O_CLOEXEC", 0))


class WriteLock:
    """Held from :meth:`acquire` until :meth:`release` (or the process ends)."""

    def __init__(self, index_path: Path) -> None:
        self.index = Path(index_path)
        self.path = Path(str(index_path) + ".lock")
        self._fd: int | None = None

    def acquire(self, *, wait: bool = True,
                on_wait: Callable[[int | None], None] | None = None) -> None:
        """Take the lock; if another process has it, wait for it (calling ``on_wait`` once
        with its PID) or, with ``wait=False``, raise :class:`IndexBusy` naming it."""
        told = False
        while True:
            fd = self._open()
            while not _try_lock(fd):
                pid = _read_pid(fd)
                if not wait:
                    os.close(fd)
                    raise IndexBusy(f"index {self.index} is being written by {_who(pid)}; "
                                    f"wait for it to finish", pid=pid)
                if not told and on_wait is not None:
                    on_wait(pid)
                told = True
                time.sleep(POLL_SECONDS)
            if _same_file(fd, self.path):
                break
            os.close(fd)  # the holder removed the file as it let go: lock the current one
        if _owned(fd):  # another user's leftover file: lock it, never write into it
            with contextlib.suppress(OSError):
                os.ftruncate(fd, 0)
                os.lseek(fd, 0, os.SEEK_SET)
                os.write(fd, f"{os.getpid()}\n".encode())
        self._fd = fd

    def _open(self) -> int:
        """The lock file, created if missing; a symlink or anything but a regular file with
        one name at its path is refused (:class:`IndexFileError`), untouched."""
        try:
            fd = os.open(self.path, _FLAGS, 0o644)
        except OSError as exc:
            if os.path.islink(self.path):
                raise IndexFileError(
                    f"cannot write the index {self.index}: its lock file {self.path} is a "
                    f"symbolic link, which is never followed; remove it if you did not make "
                    f"it") from exc
            raise IndexFileError(f"cannot write the index {self.index}: cannot create its "
                                 f"lock file {self.path}: {exc.strerror or exc}") from exc
        try:
            info = os.fstat(fd)
        except OSError as exc:
            os.close(fd)
            raise IndexFileError(f"cannot write the index {self.index}: cannot read its lock "
                                 f"file {self.path}: {exc.strerror or exc}") from exc
        problem = ("is not a regular file" if not stat.S_ISREG(info.st_mode) else
                   "has other names (hard links)" if info.st_nlink > 1 else None)
        if problem:
            os.close(fd)
            raise IndexFileError(f"cannot write the index {self.index}: its lock file "
                                 f"{self.path} {problem}; remove it if you did not make it")
        return fd

    def release(self) -> None:
        if self._fd is not None:
            fd, self._fd = self._fd, None
            with contextlib.suppress(OSError):
                os.unlink(self.path)  # still holding it, so no one can have locked the path
            _unlock(fd)
            os.close(fd)


def _owned(fd: int) -> bool:
    """Whether this process's user owns the open file (always true where there are no
    owners to compare)."""
    geteuid = getattr(os, "geteuid", None)
    if geteuid is None:
        return True
    try:
        return os.fstat(fd).st_uid == geteuid()
    except OSError:
        return False


def _same_file(fd: int, path: Path) -> bool:
    try:
        a, b = os.fstat(fd), os.stat(path)
    except OSError:
        return False
    return (a.st_dev, a.st_ino) == (b.st_dev, b.st_ino)


def _who(pid: int | None) -> str:
    return f"PID {pid}" if pid else "another process"


def _read_pid(fd: int) -> int | None:
    try:
        os.lseek(fd, 0, os.SEEK_SET)
        text = os.read(fd, 32).decode("ascii", "replace").strip()
    except OSError:
        return None
    return int(text) if text.isdigit() else None


if sys.platform == "win32":  # pragma: no cover - exercised on Windows only
    import msvcrt

    def _try_lock(fd: int) -> bool:
        os.lseek(fd, 0, os.SEEK_SET)
        try:
            msvcrt.locking(fd, msvcrt.LK_NBLCK, 1)
        except OSError:
            return False
        return True

    def _unlock(fd: int) -> None:
        os.lseek(fd, 0, os.SEEK_SET)
        with contextlib.suppress(OSError):
            msvcrt.locking(fd, msvcrt.LK_UNLCK, 1)
else:
    import fcntl

    def _try_lock(fd: int) -> bool:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return False
        return True

    def _unlock(fd: int) -> None:
        with contextlib.suppress(OSError):
            fcntl.flock(fd, fcntl.LOCK_UN)
