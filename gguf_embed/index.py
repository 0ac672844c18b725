"""The library API for apps: open or create an index, add and remove paths, search, close.

    from gguf_embed import Engine, Index, resolve_model
    engine = Engine(resolve_model("qwen3-embedding-0.6b"))
    with Index("notes.db", engine) as index:
        summary = index.add(["~/notes"])
        for hit in index.search("how do I rotate logs?", k=5):
            print(hit.path, hit.start_line, hit.score)

An index records what made it (model file fingerprint, dims, pooling, prompts, chunking) and
refuses another model; ``reindex=True`` rebuilds it for the engine given.  Several processes may
read one index while another writes to it (WAL).  Nothing here prints or reads the environment.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from .chunking import ChunkSettings
from .errors import IndexMismatch, InputError
from .extract import DEFAULT_MAX_BYTES
from .indexer import Indexer, IndexSummary, Progress
from .models import file_fingerprint
from .search import SearchResult, search
from .store import Store
from .walk import Rules

IDENTITY_KEYS = ("model_fingerprint", "dims")


class Index:
    def __init__(self, path: str | Path, engine: Any | None = None, *,
                 dimensions: int | None = None, chunking: ChunkSettings | None = None,
                 reindex: bool = False, readonly: bool = False,
                 model_ref: str | None = None) -> None:
        self.path = Path(path)
        self.engine = engine
        self.store = Store.open(self.path, create=not readonly, readonly=readonly)
        try:
            if engine is not None:
                self._bind(engine, dimensions, chunking, reindex, model_ref, readonly)
        except Exception:
            self.store.close()
            raise

    # ------------------------------------------------------------------ identity
    @property
    def meta(self) -> dict[str, Any]:
        return self.store.meta

    @property
    def dims(self) -> int | None:
        return self.store.dims

    @property
    def chunk_settings(self) -> ChunkSettings:
        chunking = self.meta.get("chunking") or {}
        return ChunkSettings(**chunking)

    def _bind(self, engine: Any, dimensions: int | None, chunking: ChunkSettings | None,
              reindex: bool, model_ref: str | None, readonly: bool) -> None:
        wanted = identity(engine, dimensions, chunking)
        if model_ref:
            wanted["model"] = model_ref
        if reindex and not readonly:
            self.store.reset()
        recorded = self.meta
        if "model_fingerprint" not in recorded:
            if readonly:
                raise IndexMismatch(f"index {self.path} is empty; index some files first")
            self.store.ensure_vectors(wanted["dims"])
            self.store.set_meta({**wanted, "created_at": time.time()})
            return
        for key in IDENTITY_KEYS:
            if recorded.get(key) != wanted[key]:
                raise IndexMismatch(
                    f"index {self.path} was built with {recorded.get('model_file')} "
                    f"({recorded.get('dims')} dims); this is {wanted['model_file']} "
                    f"({wanted['dims']} dims): pass --reindex to rebuild it, or use the "
                    f"model it was built with")
        if chunking is not None and chunking.to_dict() != recorded.get("chunking"):
            raise IndexMismatch(
                f"index {self.path} was chunked with {recorded.get('chunking')}; pass "
                f"--reindex to rebuild it with {chunking.to_dict()}")

    # ------------------------------------------------------------------ writing
    def add(self, paths: Sequence[str | Path], *, include: Sequence[str] = (),
            exclude: Sequence[str] = (), use_ignore_files: bool = True,
            max_file_bytes: int = DEFAULT_MAX_BYTES,
            progress: Callable[[Progress], None] | None = None) -> IndexSummary:
        """Bring the documents under ``paths`` up to date (add, update, move, remove)."""
        engine = self._need_engine()
        rules = self._rules(include, exclude, use_ignore_files)
        self._remember_roots(paths)
        run_id = self.store.start_run()
        indexer = Indexer(self.store, engine, self.chunk_settings,
                          dimensions=self.meta.get("dimensions"), rules=rules,
                          max_file_bytes=max_file_bytes, progress=progress)
        summary = indexer.run(paths)
        self.store.finish_run(run_id, summary.to_dict())
        return summary

    def update(self, changed: Sequence[str | Path], roots: Sequence[str | Path], *,
               include: Sequence[str] = (), exclude: Sequence[str] = (),
               use_ignore_files: bool = True,
               max_file_bytes: int = DEFAULT_MAX_BYTES) -> IndexSummary:
        """Apply a batch of changed paths (created, edited, deleted or moved files or folders,
        and ignore files) under the watched ``roots``, in one transaction."""
        from .watch import plan

        engine = self._need_engine()
        rules = self._rules(include, exclude, use_ignore_files)
        todo = plan(changed, roots, rules)
        if not todo.scopes:
            return IndexSummary()
        indexer = Indexer(self.store, engine, self.chunk_settings,
                          dimensions=self.meta.get("dimensions"), rules=rules,
                          max_file_bytes=max_file_bytes)
        indexer.summary.skipped += [(str(r.path), r.reason) for r in todo.refused]
        with self.store.transaction():
            return indexer.update(todo.found, todo.scopes, prune=True,
                                  existing=self.store.documents_under(todo.scopes))

    def watch(self, paths: Sequence[str | Path], stop_event: Any | None = None,
              on_change: Callable[[Any], None] | None = None, **options: Any) -> None:
        """Catch up with ``paths``, then keep the index in step with them until ``stop_event``
        is set (blocking; see :func:`gguf_embed.watch.watch` for ``on_change`` and options)."""
        from .watch import watch

        watch(self, paths, stop_event, on_change, **options)

    @property
    def roots(self) -> list[str]:
        """The files and folders ever given to :meth:`add` (absolute)."""
        return list(self.meta.get("roots") or [])

    def _remember_roots(self, paths: Sequence[str | Path]) -> None:
        roots = set(self.roots)
        new = {os.path.abspath(p) for p in paths} - roots
        if new:
            self.store.set_meta({"roots": sorted(roots | new)})

    def _rules(self, include: Sequence[str], exclude: Sequence[str],
               use_ignore_files: bool) -> Rules:
        skip = frozenset(os.path.realpath(str(self.path) + s)
                         for s in ("", "-wal", "-shm", "-journal"))
        return Rules(tuple(include), tuple(exclude), use_ignore_files, skip)

    def remove(self, paths: Sequence[str | Path]) -> int:
        """Forget every document at or under ``paths``; returns how many."""
        scopes = [os.path.abspath(p) for p in paths]
        victims = [p for p in self.store.documents()
                   if any(p == s or p.startswith(s.rstrip(os.sep) + os.sep) for s in scopes)]
        with self.store.transaction():
            return self.store.delete_documents(victims)

    # ------------------------------------------------------------------ reading
    def search(self, query: str, *, k: int = 10, mode: str = "hybrid",
               path: str | None = None, exact: bool | None = None) -> list[SearchResult]:
        """Ranked chunks for ``query``; ``path`` is a glob on document paths."""
        vector = None
        if mode != "keyword":
            vector = self.embed_query(query)
        return search(self.store, vector, query, k=k, mode=mode,
                      path_glob=_glob(path), exact=exact)

    def search_many(self, queries: Sequence[str], *, k: int = 10, mode: str = "hybrid",
                    path: str | None = None) -> list[list[SearchResult]]:
        """Several queries, embedded together (one model, one batch)."""
        vectors: list[Any] = [None] * len(queries)
        if mode != "keyword" and queries:
            vectors = list(self._query_vectors(list(queries)))
        return [search(self.store, v, q, k=k, mode=mode, path_glob=_glob(path))
                for q, v in zip(queries, vectors, strict=True)]

    def embed_query(self, query: str) -> Any:
        if not query.strip():
            raise InputError("the query is empty", param="query")
        return self._query_vectors([query])[0]

    def _query_vectors(self, queries: list[str]) -> Any:
        engine = self._need_engine()
        for i, q in enumerate(queries):
            if not q.strip():
                raise InputError(f"query {i + 1} is empty", param="query")
        return engine.embed(queries, query=True, dimensions=self.meta.get("dimensions"),
                            truncate=True)

    def status(self) -> dict[str, Any]:
        size = sum(os.path.getsize(str(self.path) + s) for s in ("", "-wal")
                   if os.path.exists(str(self.path) + s))
        meta = self.meta
        return {
            "path": str(self.path), "model": meta.get("model"),
            "model_file": meta.get("model_file"), "dims": meta.get("dims"),
            "pooling": meta.get("pooling"), "chunking": meta.get("chunking"),
            **self.store.counts(), "size_bytes": size, "last_run": self.store.last_run(),
            "schema_version": meta.get("schema_version"),
        }

    def _need_engine(self) -> Any:
        if self.engine is None:
            raise InputError("this needs the embedding model: open the index with an engine")
        return self.engine

    def close(self) -> None:
        self.store.close()

    def __enter__(self) -> Index:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def identity(engine: Any, dimensions: int | None = None,
             chunking: ChunkSettings | None = None) -> dict[str, Any]:
    """What an index records about the model and settings that made it."""
    spec = engine.spec
    dims = dimensions or engine.dims
    chunking = chunking or ChunkSettings.for_context(engine.max_tokens)
    if chunking.max_tokens > engine.max_tokens:
        raise InputError(f"chunk size {chunking.max_tokens} is over the model's context "
                         f"({engine.max_tokens} tokens)", param="chunk_tokens")
    return {
        "model": spec.name, "model_file": Path(engine.path).name,
        "model_size": os.path.getsize(engine.path) if os.path.exists(engine.path) else None,
        "model_fingerprint": getattr(engine, "fingerprint", None) or file_fingerprint(
            Path(engine.path)),
        "model_sha256": spec.sha256, "dims": dims, "dimensions": dimensions,
        "model_dims": engine.dims, "pooling": engine.pooling, "eos": spec.eos,
        "query_prompt": spec.query_prompt, "document_prompt": spec.document_prompt,
        "default_task": spec.default_task, "context": engine.max_tokens,
        "chunking": chunking.to_dict(),
    }


def _glob(path: str | None) -> str | None:
    """A user's path filter as a GLOB on the absolute paths stored."""
    if not path:
        return None
    if any(ch in path for ch in "*?["):
        return path if path.startswith(("/", "*")) else "*" + path.lstrip("./")
    absolute = os.path.abspath(path)
    return absolute + ("*" if os.path.isdir(absolute) or path.endswith("/") else "")


__all__ = ["Index", "IndexSummary", "Progress", "SearchResult", "identity"]
