"""gguf-embed: private, offline semantic search with GGUF embedding models.

``Engine``, ``IdleEngine`` and ``Reranker`` (and their options) load llama.cpp, so they are
imported on first use: ``gguf_embed.testing`` and the index work without it.  ``RayExecutor``
imports Ray only when a run starts (``pip install "gguf-embed[ray]"``); ``RemoteEngine`` (an
embedding server over HTTP) imports httpx when one is made (``pip install "gguf-embed[remote]"``).
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from .chunking import ChunkSettings
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
from .search import SearchResult

if TYPE_CHECKING:
    from .engine import Engine, EngineOptions
    from .idle import IdleEngine
    from .ray_executor import RayExecutor
    from .remote_engine import RemoteEngine
    from .reranker import Reranker, RerankOptions, RerankScores

__version__ = "0.1.0"

_LAZY = {"Engine": "engine", "EngineOptions": "engine", "IdleEngine": "idle",
         "Reranker": "reranker", "RerankOptions": "reranker", "RerankScores": "reranker",
         "RayExecutor": "ray_executor", "RemoteEngine": "remote_engine"}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        value = getattr(importlib.import_module(f".{_LAZY[name]}", __name__), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


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
