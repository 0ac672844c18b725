"""gguf-embed: private, offline semantic search with GGUF embedding models."""

from .engine import Embeddings, Engine, EngineOptions
from .errors import (
    EngineError,
    GgufEmbedError,
    IndexBusy,
    IndexMismatch,
    InputError,
    InputTooLong,
    InvalidDimensions,
    ModelError,
    ModelLoadError,
    ModelNotFound,
    PathError,
    QueryTruncated,
)
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
from .reranker import Reranker, RerankOptions, RerankScores
from .search import SearchResult

__version__ = "0.1.0"

__all__ = [
    "CATALOG",
    "DEFAULT_MODEL",
    "DEFAULT_RERANKER",
    "Embeddings",
    "Engine",
    "EngineError",
    "EngineOptions",
    "GgufEmbedError",
    "IdleEngine",
    "Index",
    "IndexBusy",
    "IndexMismatch",
    "IndexSummary",
    "InputError",
    "InputTooLong",
    "InvalidDimensions",
    "ModelError",
    "ModelLoadError",
    "ModelNotFound",
    "ModelSpec",
    "PathError",
    "Progress",
    "QueryTruncated",
    "RerankOptions",
    "RerankScores",
    "Reranker",
    "ResolvedModel",
    "SearchResult",
    "__version__",
    "resolve_model",
]
