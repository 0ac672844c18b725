"""The one exception hierarchy of gguf-embed.

    GgufEmbedError                 anything this library raises on purpose
    ├── ModelError                 a model cannot be found, fetched, verified or loaded
    │   ├── ModelNotFound          unknown name, missing path, or not cached while offline
    │   └── ModelLoadError         llama.cpp cannot use the file (corrupt, not GGUF)
    ├── InputError                 a caller gave input that cannot be embedded
    │   ├── InputTooLong           more tokens than the context holds (no truncation asked)
    │   ├── InvalidDimensions      a Matryoshka size outside the model's range
    │   └── PathError              a path named to index is missing or unreadable
    ├── IndexFileError             the SQLite index (see store.py) cannot serve the request
    │   ├── IndexMismatch          the index was built with another model, dimensions or settings
    │   ├── IndexBusy              another process is writing the index (and waiting was off)
    │   ├── IndexTooNew            written by a newer gguf-embed schema: not written by this one
    │   ├── IndexWriteError        the disk is full, a file-size limit, an I/O error on writing
    │   └── IndexDamaged           SQLite finds the file damaged (a malformed page, not a
    │                              database): nothing more is written to it
    ├── EngineError                llama.cpp failed while decoding
    │   ├── EngineUnavailable      a remote embedding server cannot be reached or refuses
    │   │                          (down, wrong URL or key; after retries): ends an index run
    │   └── NonFiniteVector        the model gave NaN or Inf for some inputs (never stored)
    └── ClusterError               the Ray cluster cannot go on (unreachable, an actor died
                                   more often than it may be restarted, ray not installed)

    QueryTruncated (a UserWarning)  a search query was cut to the model's context
    NonFiniteVectors (a UserWarning)  stored vectors with NaN/Inf were left out of a search

The CLI maps each class to a one-line ``Error: ...`` once; the server maps them to OpenAI's
error envelope once.  Messages name the file or field and say what to do.
"""

from __future__ import annotations

from typing import Any

QUOTE_LIMIT = 200  # characters of user input an error message quotes


class GgufEmbedError(Exception):
    """Base class for every error gguf-embed raises on purpose."""


class ModelError(GgufEmbedError):
    """A model cannot be found, fetched, verified or loaded."""


class ModelNotFound(ModelError):
    """Unknown catalog name, missing path, or a file that is not cached while offline."""


class ModelLoadError(ModelError):
    """The file exists but llama.cpp cannot load it as an embedding model."""


class InputError(GgufEmbedError):
    """Input that cannot be embedded as given."""

    def __init__(self, message: str, *, param: str | None = None) -> None:
        super().__init__(message)
        self.param = param


class InputTooLong(InputError):
    """An input has more tokens than the context allows."""

    def __init__(self, message: str, *, index: int, n_tokens: int, limit: int) -> None:
        super().__init__(message, param="input")
        self.index = index
        self.n_tokens = n_tokens
        self.limit = limit


class InvalidDimensions(InputError):
    """A requested output size is outside the model's Matryoshka range."""

    def __init__(self, message: str) -> None:
        super().__init__(message, param="dimensions")


class PathError(InputError):
    """A path named to index does not exist, cannot be read, or looks unmounted."""

    def __init__(self, message: str) -> None:
        super().__init__(message, param="paths")


class IndexFileError(GgufEmbedError):
    """The SQLite index cannot serve the request."""


class IndexMismatch(IndexFileError):
    """The index was built with another model, dimensions or settings."""


class IndexBusy(IndexFileError):
    """Another process holds the index's write lock (raised only when not waiting for it)."""

    def __init__(self, message: str, *, pid: int | None = None) -> None:
        super().__init__(message)
        self.pid = pid


class IndexTooNew(IndexFileError):
    """The index was written by a newer schema than this version knows: it is not written."""

    def __init__(self, message: str, *, written: int, known: int) -> None:
        super().__init__(message)
        self.written = written
        self.known = known


class IndexWriteError(IndexFileError):
    """Writing the index failed for want of room or at the device (disk full, a file-size
    limit, an I/O error); what was committed before stays valid."""


class QueryTruncated(UserWarning):
    """A search query was longer than the model's context and was cut to fit (a warning).
    ``index``: its place among the queries searched together; ``limit``: the tokens kept."""

    def __init__(self, message: str, *, index: int = 0, limit: int = 0) -> None:
        super().__init__(message)
        self.index = index
        self.limit = limit

    @staticmethod
    def text(label: str, limit: int) -> str:
        """The warning's words for the query ``label`` ("the query", "query 2")."""
        return (f"{label} is longer than the model's context; only its first {limit} tokens "
                f"were searched for")


class NonFiniteVectors(UserWarning):
    """The index holds vectors with NaN or infinite values: vector search left those chunks
    out (a warning, given once per chunk and process)."""


class EngineError(GgufEmbedError):
    """llama.cpp failed while decoding."""


class EngineUnavailable(EngineError):
    """A remote embedding server (``--embed-url``) cannot be reached or refuses requests, after
    retries; names the URL, never the key.  Ends an index run (what was committed stays)."""

    def __init__(self, message: str, *, url: str) -> None:
        super().__init__(message)
        self.url = url


class NonFiniteVector(EngineError):
    """The model gave a vector with NaN or Inf for some inputs (``indices``): such a vector
    is never returned for storing.  ``vectors`` holds all rows, the bad ones included, so a
    caller embedding many inputs can keep the good ones."""

    def __init__(self, message: str, *, indices: list[int], vectors: Any = None) -> None:
        super().__init__(message)
        self.indices = indices
        self.vectors = vectors


class ClusterError(GgufEmbedError):
    """The Ray cluster embedding an index run cannot go on; what was committed stays."""


def first_line(exc: BaseException, *, empty: str = "", limit: int | None = None) -> str:
    """The first line of an exception's message (for a one-line error), ``empty`` if it has
    none, cut to ``limit`` characters when given."""
    text = str(exc).strip()
    return text.splitlines()[0][:limit] if text else empty


def quoted(value: object, limit: int = QUOTE_LIMIT) -> str:
    """User input as an error message quotes it: at most ``limit`` characters, the middle
    elided with the count of what was left out (a 5 MB path is not echoed back whole)."""
    text = str(value)
    if len(text) <= limit:
        return text
    keep = max(limit - 40, 20)
    head, tail = keep * 2 // 3, keep - keep * 2 // 3
    return f"{text[:head]}…[{len(text) - head - tail:,} characters]…{text[-tail:]}"


def capped(message: str, limit: int = 2_000) -> str:
    """A whole error message cut to ``limit`` characters (the surfaces' last guard, for
    messages that quote input without :func:`quoted`)."""
    return quoted(message, limit)


class IndexDamaged(IndexFileError):
    """SQLite found the index file damaged (a malformed page, or not a database) while reading
    it; nothing more is written to it.  The message names the file and what to do (restore a
    backup, build a new index, ``sqlite3 .recover``); ``path`` is the damaged file."""

    def __init__(self, message: str, *, path: str) -> None:
        super().__init__(message)
        self.path = path
