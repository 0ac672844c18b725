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
    │   └── IndexBusy              another process is writing the index (and waiting was off)
    ├── EngineError                llama.cpp failed while decoding
    └── ClusterError               the Ray cluster cannot go on (unreachable, an actor died
                                   more often than it may be restarted, ray not installed)

    QueryTruncated (a UserWarning)  a search query was cut to the model's context
    NonFiniteVectors (a UserWarning)  stored vectors with NaN/Inf were left out of a search

The CLI maps each class to a one-line ``Error: ...`` once; the server maps them to OpenAI's
error envelope once.  Messages name the file or field and say what to do.
"""

from __future__ import annotations


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


class QueryTruncated(UserWarning):
    """A search query was longer than the model's context and was cut to fit (a warning)."""


class NonFiniteVectors(UserWarning):
    """The index holds vectors with NaN or infinite values: vector search left those chunks
    out (a warning, given once per chunk and process)."""


class EngineError(GgufEmbedError):
    """llama.cpp failed while decoding."""


class ClusterError(GgufEmbedError):
    """The Ray cluster embedding an index run cannot go on; what was committed stays."""


def first_line(exc: BaseException, *, empty: str = "", limit: int | None = None) -> str:
    """The first line of an exception's message (for a one-line error), ``empty`` if it has
    none, cut to ``limit`` characters when given."""
    text = str(exc).strip()
    return text.splitlines()[0][:limit] if text else empty
