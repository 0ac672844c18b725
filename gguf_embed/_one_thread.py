"""One thread at a time inside an object (an :class:`~gguf_embed.index.Index`: one SQLite
connection): :class:`OneThread`, the re-entrant guard, and :func:`one_thread`, a method
decorator that runs the method inside its object's guard, ``self._owned``."""

from __future__ import annotations

import contextlib
import functools
import threading
from collections.abc import Callable, Iterator
from typing import Any, TypeVar

from .errors import IndexFileError

_M = TypeVar("_M", bound=Callable[..., Any])


class OneThread:
    """Entered by one thread at a time (re-entrant for that thread); another thread that
    tries meanwhile gets :class:`IndexFileError` with ``refusal``, at once."""

    def __init__(self, refusal: str) -> None:
        self.refusal = refusal
        self._lock = threading.Lock()
        self._owner: int | None = None  # the thread inside, if any
        self._depth = 0

    @contextlib.contextmanager
    def __call__(self) -> Iterator[None]:
        me = threading.get_ident()
        with self._lock:
            if self._owner not in (None, me):
                raise IndexFileError(self.refusal)
            self._owner = me
            self._depth += 1
        try:
            yield
        finally:
            with self._lock:
                self._depth -= 1
                if not self._depth:
                    self._owner = None


def one_thread(method: _M) -> _M:
    """Run ``method`` inside ``self._owned()`` (a :class:`OneThread`)."""
    @functools.wraps(method)
    def wrapper(self: Any, *args: Any, **kwargs: Any) -> Any:
        with self._owned():
            return method(self, *args, **kwargs)
    return wrapper  # type: ignore[return-value]
