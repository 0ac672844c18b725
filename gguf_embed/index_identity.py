"""What an index records about the model and settings that made it, and the checks that keep
another model out of it (see :class:`gguf_embed.index.Index`): :func:`identity`, what is
recorded; :func:`bind`, an engine checked against the record (or recorded in an empty index);
:func:`recorded_model`, the model an existing index opens with; and loading and closing the
engine that :meth:`Index.open <gguf_embed.index.Index.open>` owns.  Nothing here prints."""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .chunking import ChunkSettings
from .errors import IndexMismatch, InputError
from .models import DEFAULT_MODEL
from .remote_identity import identity_problem

if TYPE_CHECKING:
    from .protocol import EmbeddingEngine
    from .store import Store

IDENTITY_KEYS = ("model_fingerprint", "dims")


def identity(engine: EmbeddingEngine, dimensions: int | None = None,
             chunking: ChunkSettings | None = None) -> dict[str, Any]:
    """What an index records about the model and settings that made it."""
    spec = engine.spec
    dims = dimensions or engine.dims
    chunking = chunking or ChunkSettings.for_context(engine.max_tokens)
    if chunking.max_tokens > engine.max_tokens:
        raise InputError(f"chunk size {chunking.max_tokens} is over the model's context "
                         f"({engine.max_tokens} tokens)", param="chunk_tokens")
    extra = getattr(engine, "identity_extra", None)  # a RemoteEngine: what the server is
    return {
        "model": spec.name, "model_file": Path(engine.path).name,
        "model_size": os.path.getsize(engine.path) if os.path.exists(engine.path) else None,
        "model_fingerprint": engine.fingerprint,
        "model_sha256": spec.sha256, "dims": dims, "dimensions": dimensions,
        "model_dims": engine.dims, "pooling": engine.pooling, "eos": spec.eos,
        "query_prompt": spec.query_prompt, "document_prompt": spec.document_prompt,
        "default_task": spec.default_task, "context": engine.max_tokens,
        "chunking": chunking.to_dict(), **(extra() if extra else {}),
    }


def bind(store: Store, path: Path, engine: EmbeddingEngine, dimensions: int | None,
         chunking: ChunkSettings | None, reindex: bool, model_ref: str | None,
         readonly: bool) -> None:
    """Check ``engine`` (with ``dimensions`` and ``chunking``) against what the index at
    ``path`` records, or record it in an empty (or, with ``reindex``, emptied) index; raise
    :class:`IndexMismatch` for another model or other settings."""
    engine.check_dimensions(dimensions)  # before the index records them
    wanted = identity(engine, dimensions, chunking)
    if model_ref:
        wanted["model"] = model_ref
    if reindex and not readonly:
        store.reset()
    recorded = store.meta
    if "model_fingerprint" not in recorded:
        if readonly:
            raise IndexMismatch(f"index {path} is empty; index some files first")
        store.ensure_vectors(wanted["dims"])
        store.set_meta({**wanted, "created_at": time.time()})
        return
    if "remote" in recorded or "remote" in wanted:  # a server: see remote_identity.py
        problem = identity_problem(recorded, wanted)
        if problem:
            raise IndexMismatch(f"index {path} {problem}")
    for key in IDENTITY_KEYS if "remote" not in recorded or "remote" not in wanted else ():
        if recorded.get(key) != wanted[key]:
            raise IndexMismatch(
                f"index {path} was built with {recorded.get('model_file')} "
                f"({recorded.get('dims')} dims); this is {wanted['model_file']} "
                f"({wanted['dims']} dims): pass --reindex to rebuild it, or use the "
                f"model it was built with")
    if chunking is not None and chunking.to_dict() != recorded.get("chunking"):
        raise IndexMismatch(
            f"index {path} was chunked with {recorded.get('chunking')}; pass "
            f"--reindex to rebuild it with {chunking.to_dict()}")


def recorded_model(meta: dict[str, Any], path: Path, model: str | None) -> str:
    """The model to open the index at ``path`` (recording ``meta``) with: ``model`` when
    given, else the one it records, else :data:`DEFAULT_MODEL`; an index whose model is on a
    server names no model to load (never guessed, or called)."""
    if not model and meta.get("remote"):
        raise IndexMismatch(f"index {path} {identity_problem(meta, {})}")
    return model or meta.get("model") or DEFAULT_MODEL


def load_engine(ref: str) -> EmbeddingEngine:
    """The default loader of :meth:`Index.open <gguf_embed.index.Index.open>`."""
    from .engine import Engine
    from .models import resolve_model

    return Engine(resolve_model(ref))


def close_engine(engine: object) -> None:
    close = getattr(engine, "close", None)  # Engine has one; the contract does not need it
    if close is not None:
        close()
