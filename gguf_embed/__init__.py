"""gguf-embed: private, offline semantic search with GGUF embedding models.

Every public name is imported on first use (``from gguf_embed import Index`` works as ever),
so ``import gguf_embed`` itself costs nothing: a one-shot CLI command imports only what it
needs (numpy, SQLite, llama.cpp, faiss come with the names that use them).  ``Engine``,
``IdleEngine`` and ``Reranker`` load llama.cpp; ``RayExecutor`` imports Ray only when a run
starts (``pip install "gguf-embed[ray]"``); ``RemoteEngine`` (an embedding server over HTTP)
imports httpx when one is made (``pip install "gguf-embed[remote]"``).
"""

from __future__ import annotations

# Nothing is imported here at run time, not even ``typing``: the CLI's Ctrl-C handling
# (``Interrupted.``, exit 130) starts with ``gguf_embed.cli``, and everything this package's
# own import runs comes before it (a Ctrl-C there was a traceback).  Type checkers take a
# name ``TYPE_CHECKING`` as true.
TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

    from .chunking import ChunkSettings
    from .engine import Engine, EngineOptions
    from .errors import (
        ClusterError,
        EngineError,
        EngineUnavailable,
        GgufEmbedError,
        IndexBusy,
        IndexFileError,
        IndexMismatch,
        InputError,
        InputTooLong,
        InvalidDimensions,
        ModelError,
        ModelLoadError,
        ModelNotFound,
        NonFiniteVectors,
        PathError,
        QueryTruncated,
    )
    from .executor import Executor
    from .idle import IdleEngine
    from .index import Index
    from .indexer import IndexSummary, Progress
    from .models import (
        CATALOG,
        DEFAULT_MODEL,
        DEFAULT_RERANKER,
        ModelSpec,
        ResolvedModel,
        resolve_model,
    )
    from .protocol import EmbeddingEngine, Embeddings, Prepared
    from .ray_executor import RayExecutor
    from .remote_engine import RemoteEngine
    from .reranker import Reranker, RerankOptions, RerankScores
    from .search import SearchResult
del TYPE_CHECKING  # not a name of the package

__version__ = "0.1.0"

_ERRORS = ("ClusterError", "EngineError", "EngineUnavailable", "GgufEmbedError", "IndexBusy",
           "IndexFileError", "IndexMismatch", "InputError", "InputTooLong",
           "InvalidDimensions", "ModelError", "ModelLoadError", "ModelNotFound",
           "NonFiniteVectors", "PathError", "QueryTruncated")
_LAZY = {
    **dict.fromkeys(_ERRORS, "errors"),
    "ChunkSettings": "chunking", "Executor": "executor", "Index": "index",
    "IndexSummary": "indexer", "Progress": "indexer",
    **dict.fromkeys(("CATALOG", "DEFAULT_MODEL", "DEFAULT_RERANKER", "ModelSpec",
                     "ResolvedModel", "resolve_model"), "models"),
    **dict.fromkeys(("EmbeddingEngine", "Embeddings", "Prepared"), "protocol"),
    "SearchResult": "search",
    "Engine": "engine", "EngineOptions": "engine", "IdleEngine": "idle",
    "Reranker": "reranker", "RerankOptions": "reranker", "RerankScores": "reranker",
    "RayExecutor": "ray_executor", "RemoteEngine": "remote_engine",
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        value = getattr(importlib.import_module(f".{_LAZY[name]}", __name__), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})


__all__ = [
    "CATALOG",
    "DEFAULT_MODEL",
    "DEFAULT_RERANKER",
    "ChunkSettings",
    "ClusterError",
    "EmbeddingEngine",
    "Embeddings",
    "Engine",
    "EngineError",
    "EngineOptions",
    "EngineUnavailable",
    "Executor",
    "GgufEmbedError",
    "IdleEngine",
    "Index",
    "IndexBusy",
    "IndexFileError",
    "IndexMismatch",
    "IndexSummary",
    "InputError",
    "InputTooLong",
    "InvalidDimensions",
    "ModelError",
    "ModelLoadError",
    "ModelNotFound",
    "ModelSpec",
    "NonFiniteVectors",
    "PathError",
    "Prepared",
    "Progress",
    "QueryTruncated",
    "RayExecutor",
    "RemoteEngine",
    "RerankOptions",
    "RerankScores",
    "Reranker",
    "ResolvedModel",
    "SearchResult",
    "__version__",
    "resolve_model",
]
