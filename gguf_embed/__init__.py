"""gguf-embed: private, offline semantic search with GGUF embedding models."""

from .engine import Embeddings, Engine, EngineOptions
from .errors import (
    EngineError,
    GgufEmbedError,
    IndexMismatch,
    InputError,
    InputTooLong,
    InvalidDimensions,
    ModelError,
    ModelLoadError,
    ModelNotFound,
)
from .idle import IdleEngine
from .index import Index
from .indexer import IndexSummary, Progress
from .models import CATALOG, DEFAULT_MODEL, ModelSpec, ResolvedModel, resolve_model
from .search import SearchResult

__version__ = "0.1.0"

__all__ = [
    "CATALOG",
    "DEFAULT_MODEL",
    "Embeddings",
    "Engine",
    "EngineError",
    "EngineOptions",
    "GgufEmbedError",
    "IdleEngine",
    "Index",
    "IndexMismatch",
    "IndexSummary",
    "InputError",
    "InputTooLong",
    "InvalidDimensions",
    "ModelError",
    "ModelLoadError",
    "ModelNotFound",
    "ModelSpec",
    "Progress",
    "ResolvedModel",
    "SearchResult",
    "__version__",
    "resolve_model",
]
