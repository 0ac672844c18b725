"""Reading a file that the index lists, race-free: what is read is what was checked.

A check on a path (its ``os.path.realpath`` inside the roots, not a credential file) and a
later ``open`` of the same path are two lookups: between them a folder on the way, or the file
itself, can be swapped for a symlink to ``~/.ssh``, and the open follows it.  Here the path is
walked one component at a time from ``/``: each folder is opened with ``O_NOFOLLOW`` relative
to the folder before it (``dir_fd``), the file last with ``O_NOFOLLOW | O_NONBLOCK`` (a fifo
cannot hang the reader) and kept only if ``fstat`` says it is a regular file.  A symlink met on
the way is read (``readlink``) and its target walked the same way, so the real path is known
from what was opened, not looked up again; ``..`` goes back to the folder the walk came
from.  The boundary (:class:`gguf_embed.walk.Bounds`) is checked on that real path and the bytes
are read from that descriptor, whatever changes on disk meanwhile.
"""

from __future__ import annotations

import errno
import os
import stat
from collections import deque
from dataclasses import dataclass
from typing import Literal

from .walk import Bounds, secret_path

MAX_LINKS = 40  # symlinks (and lookups retried after a swap) on one path, as Linux allows
_PATH = getattr(os, "O_PATH", 0)  # a folder to look up names in needs search, not read, rights
_NOFOLLOW = getattr(os, "O_NOFOLLOW", 0)
_CLOEXEC = getattr(os, "O_CLOEXEC", 0)
DIR_FLAGS = (_PATH or os.O_RDONLY) | getattr(os, "O_DIRECTORY", 0) | _NOFOLLOW | _CLOEXEC
FILE_FLAGS = (os.O_RDONLY | _NOFOLLOW | getattr(os, "O_NONBLOCK", 0) | _CLOEXEC
              | getattr(os, "O_BINARY", 0))
# Windows has no openat: there the path is checked, then opened by name (a race remains).
WALKS = _NOFOLLOW != 0 and {os.open, os.stat, os.readlink} <= os.supports_dir_fd
_SWAPPED = (errno.ELOOP, errno.ENOTDIR, errno.EMLINK)  # O_NOFOLLOW met a link made since lstat


class Unservable(Exception):
    """Why a file listed by an index is not read (the subclass says which rule)."""


class Outside(Unservable):
    """Its real path leaves the index's bounds (a symlink on the way leads elsewhere)."""


class Credentials(Unservable):
    """It holds credentials by convention (by its name or real path), whatever an index says."""


class NotRegular(Unservable):
    """A folder, fifo, socket or device: only regular files are read."""


class TooLarge(Unservable):
    def __init__(self, size: int, limit: int) -> None:
        super().__init__(f"{size} bytes > {limit}")
        self.size = size
        self.limit = limit


@dataclass(frozen=True)
class Read:
    data: bytes
    real: str  # the real path of what was read
    info: os.stat_result  # of the descriptor read


def read_inside(path: str, bounds: Bounds, *, max_bytes: int,
                credentials: Literal["refuse", "walked", "allow"] = "refuse") -> Read:
    """The bytes of the regular file ``path`` (absolute) if its real path is inside
    ``bounds`` (see :meth:`Bounds.holds`); :class:`Unservable` otherwise, ``OSError`` when it
    cannot be opened.  ``credentials``: ``"refuse"`` refuses a credential file (by its name,
    or a folder of them such as ``~/.ssh/``) on either path; ``"walked"`` (a file a walk
    found) one whose real path below the bound that holds it (a root, a followed link's
    target) has such a name, which a walk never takes or enters, so a link swapped in since
    the walk cannot bring one; ``"allow"`` reads it (a file the user named)."""
    if not WALKS:  # pragma: no cover - exercised on Windows only
        return _read_by_name(path, bounds, max_bytes, credentials)
    parts = [p for p in path.split("/") if p not in ("", ".")]
    if not path.startswith("/") or not parts:
        raise ValueError(f"not an absolute file path: {path!r}")
    stack: list[tuple[str, int]] = []  # the folders walked into: name and descriptor
    top = os.open("/", DIR_FLAGS)
    fd = -1
    try:
        hops = [0]
        _walk(top, stack, parts[:-1], hops)
        folder = _real(stack)  # the document's own folder (the bound of an index without roots)
        fd = _walk(top, stack, parts[-1:], hops, final=True)
        real = _real(stack)
        return _checked_read(fd, path, real, folder, bounds, max_bytes, credentials)
    finally:
        if fd >= 0:
            os.close(fd)
        for _, held in stack:
            if held >= 0:
                os.close(held)
        os.close(top)


def _checked_read(fd: int, path: str, real: str, folder: str, bounds: Bounds, max_bytes: int,
                  credentials: str) -> Read:
    """The rules on the real path of the open file ``fd``, then its bytes."""
    if not bounds.holds(real, folder):
        raise Outside(path)
    if credentials == "refuse" and (secret_path(path) or secret_path(real)):
        raise Credentials(path)
    if credentials == "walked":
        held = bounds.holder(real) or folder
        below = os.path.relpath(real, held) if real != held else ""
        if below and secret_path(below):
            raise Credentials(path)
    info = os.fstat(fd)
    if not stat.S_ISREG(info.st_mode):
        raise NotRegular(path)
    if info.st_size > max_bytes:
        raise TooLarge(info.st_size, max_bytes)
    return Read(_read(fd, max_bytes), real, info)


def _read_by_name(path: str, bounds: Bounds, max_bytes: int, credentials: str
                  ) -> Read:  # pragma: no cover - exercised on Windows only
    real = os.path.realpath(path)
    folder = os.path.realpath(os.path.dirname(path))
    if os.path.exists(real) and not os.path.isfile(real):
        raise NotRegular(path)  # never open a fifo or device by name: that could block
    fd = os.open(path, FILE_FLAGS)
    try:
        return _checked_read(fd, path, real, folder, bounds, max_bytes, credentials)
    finally:
        os.close(fd)


def _real(stack: list[tuple[str, int]]) -> str:
    return "/" + "/".join(name for name, _ in stack)


def _walk(top: int, stack: list[tuple[str, int]], parts: list[str], hops: list[int], *,
          final: bool = False) -> int:
    """Walk ``parts`` from the folder on top of ``stack`` (``top``, the descriptor of ``/``, when
    empty), pushing each folder opened.  With ``final`` the last part is the file: it is
    opened and pushed with the descriptor -1 (its name completes the real path), and its
    descriptor returned; otherwise -1."""
    todo = deque(parts)
    while todo:
        name = todo.popleft()
        if name == "..":
            if stack:
                os.close(stack.pop()[1])
            continue
        here = stack[-1][1] if stack else top
        info = os.stat(name, dir_fd=here, follow_symlinks=False)
        if stat.S_ISLNK(info.st_mode):
            _hop(hops)
            try:
                target = os.readlink(name, dir_fd=here)
            except OSError as exc:
                if exc.errno != errno.EINVAL:
                    raise
                todo.appendleft(name)  # no longer a link: look again
                continue
            if target.startswith("/"):
                while stack:
                    os.close(stack.pop()[1])
            todo.extendleft(reversed([p for p in target.split("/") if p not in ("", ".")]))
            continue
        last = final and not todo
        if last and not stat.S_ISREG(info.st_mode):
            raise NotRegular(name)
        if not last and not stat.S_ISDIR(info.st_mode):
            raise NotADirectoryError(errno.ENOTDIR, os.strerror(errno.ENOTDIR), name)
        try:
            fd = os.open(name, FILE_FLAGS if last else DIR_FLAGS, dir_fd=here)
        except OSError as exc:
            if exc.errno not in _SWAPPED:
                raise
            _hop(hops)  # swapped for a link since the lstat: look again
            todo.appendleft(name)
            continue
        if last:  # (a fifo swapped in since the lstat is refused by its fstat)
            stack.append((name, -1))
            return fd
        stack.append((name, fd))
    if final:
        raise NotRegular("a folder")  # a link to a folder, or a path ending in ..
    return -1


def _hop(hops: list[int]) -> None:
    hops[0] += 1
    if hops[0] > MAX_LINKS:
        raise OSError(errno.ELOOP, os.strerror(errno.ELOOP))


def _read(fd: int, max_bytes: int) -> bytes:
    """All of ``fd`` up to ``max_bytes`` (a file that grows past the limit while being read
    is :class:`TooLarge`, not cut)."""
    parts: list[bytes] = []
    size = 0
    while True:
        piece = os.read(fd, min(1 << 20, max_bytes + 1 - size))
        if not piece:
            return b"".join(parts)
        parts.append(piece)
        size += len(piece)
        if size > max_bytes:
            raise TooLarge(size, max_bytes)
