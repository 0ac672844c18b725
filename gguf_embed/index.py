"""The library API for apps: open or create an index, add and remove paths, search, close.

    from gguf_embed import Engine, Index, resolve_model
    engine = Engine(resolve_model("qwen3-embedding-0.6b"))
    with Index("notes.db", engine) as index:
        summary = index.add(["~/notes"])
        for hit in index.search("how do I rotate logs?", k=5):
            print(hit.path, hit.start_line, hit.score)

An index records what made it (model file fingerprint, dims, pooling, prompts, chunking) and
refuses another model; ``reindex=True`` rebuilds it for the engine given.  Several processes may
read one index while another writes to it (WAL); one writer at a time holds ``INDEX.lock``
(a second waits for it, or raises :class:`IndexBusy` with ``wait=False``), so identity checks
and vector writes never interleave.  Nothing here prints or reads the environment.

Threads: an ``Index`` (one SQLite connection) is used by one thread at a time; a call made while
another thread is inside one raises :class:`IndexFileError`.  Open one ``Index`` per thread on the
same file, sharing one :class:`~gguf_embed.Engine`: a worker thread adds while UI threads search
through ``readonly=True`` indexes.  Each search reads one committed state of the file, so a
concurrent run never makes results go missing or mix two versions of a document.
"""

from __future__ import annotations

import contextlib
import os
import threading
from collections.abc import Callable, Iterator, Sequence
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from . import index_paths
from ._lock import WriteLock
from ._one_thread import OneThread, one_thread
from .bounds import Bounds, under
from .chunking import ChunkSettings
from .errors import IndexFileError, InputError
from .index_file import claim, discard
from .index_identity import bind, close_engine, identity, load_engine, recorded_model
from .index_paths import check_roots
from .models import DEFAULT_MODEL
from .search import SearchResult, embed_queries, search
from .store import Store
from .store_guard import check_regular, read_errors

if TYPE_CHECKING:  # what only writing needs is imported by the methods that write
    from .executor import Executor
    from .indexer import IndexSummary, Progress
    from .indexer_records import Stage
    from .merge import MergeSummary
    from .protocol import EmbeddingEngine


class Index:
    def __init__(self, path: str | Path, engine: EmbeddingEngine | None = None, *,
                 dimensions: int | None = None, chunking: ChunkSettings | None = None,
                 reindex: bool = False, readonly: bool = False,
                 model_ref: str | None = None, wait: bool = True,
                 on_wait: Callable[[int | None], None] | None = None) -> None:
        """Open (or create) the index at ``path``.  Opened for writing, it first takes the
        write lock: if another process holds it, ``wait`` for it (``on_wait(pid)`` is called
        once) or raise :class:`~gguf_embed.errors.IndexBusy`."""
        self.path = Path(path)
        self.engine = engine
        self.last_rerank: dict[str, Any] | None = None
        self._thread = OneThread(  # one thread at a time inside a call: see _owned
            f"index {self.path} is in use by another thread; open one Index per thread "
            f"(they may share one Engine)")
        self._owned_engine = False  # loaded by Index.open: closed with the index
        self._lock: WriteLock | None = None
        self._new: list[Path] = []  # what opening it created: removed if it is left empty
        check_regular(self.path)  # a FIFO or a device: refused before anything is made
        if not readonly:
            self._lock, self._new = claim(self.path, wait=wait, on_wait=on_wait)
        try:
            self.store = Store.open(self.path, create=not readonly, readonly=readonly)
        except BaseException:
            self._release()
            self._discard_new()
            raise
        try:
            if engine is not None:
                bind(self.store, self.path, engine, dimensions, chunking, reindex, model_ref,
                     readonly)
        except BaseException:
            self.close(failed=True)
            raise

    @classmethod
    def model_for(cls, path: str | Path, model: str | None = None, *,
                  must_exist: bool = False) -> str:
        """Which model to use with the index at ``path``, decided here once for every
        surface: ``model`` when given, else the one the index records (the catalog name, or
        the file or hub reference it was built with), else :data:`DEFAULT_MODEL`.  With
        ``must_exist`` (searching), a missing or unusable index raises
        :class:`~gguf_embed.errors.IndexFileError` even when ``model`` is given."""
        path = Path(path)
        if model and not must_exist:
            return model
        if not must_exist and not path.exists():
            return DEFAULT_MODEL
        with cls(path, readonly=True) as probe:
            return recorded_model(probe.meta, path, model)

    @classmethod
    def open(cls, path: str | Path, model: str | None = None, *,
             load: Callable[[str], EmbeddingEngine] | None = None, reindex: bool = False,
             readonly: bool = False, **options: Any) -> Index:
        """The index at ``path`` with its model loaded: ``model``, else the one it records
        (see :meth:`model_for`; a ``reindex`` without ``model`` too, as the CLI's).
        ``load`` turns a model reference into an engine (default: ``Engine(resolve_model(
        ref))``); ``options`` go to :class:`Index` (``dimensions``, ``chunking``, ``wait``,
        ...).  Closing the index closes the engine it loaded."""
        ref = cls.model_for(path, model, must_exist=readonly and not reindex)
        engine = (load or load_engine)(ref)
        try:
            index = cls(path, engine, reindex=reindex, readonly=readonly, model_ref=ref,
                        **options)
        except BaseException:
            close_engine(engine)
            raise
        index._owned_engine = True
        return index

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

    def stale(self) -> bool:
        """Whether another process changed what the index records (its model or settings,
        a rebuild) since it was opened here: reopen it to search it."""
        return self.store.meta_changed()

    # ------------------------------------------------------------------ writing
    @one_thread
    def add(self, paths: Sequence[str | Path], *, include: Sequence[str] = (),
            exclude: Sequence[str] = (), use_ignore_files: bool = True,
            max_file_bytes: int | None = None,
            progress: Callable[[Progress], None] | None = None,
            prune_missing: bool = False,
            cancel: threading.Event | None = None,
            executor: Executor | None = None,
            follow_symlinks: bool = False,
            on_found: Callable[[list[Path]], None] | None = None,
            on_stage: Callable[[Stage], None] | None = None) -> IndexSummary:
        """Bring the documents under ``paths`` up to date (add, update, move, remove).

        A symlink inside ``paths`` whose target leaves them is not followed (counted in
        ``summary.symlinks_skipped``; documents indexed under it before are removed) unless
        ``follow_symlinks``; a symlink whose target stays inside is not followed either, its
        target being indexed under its own path (see docs/security.md).

        A path that does not exist or cannot be read (or an empty folder while the index holds
        documents under it: an unmounted drive?) raises :class:`PathError` before anything
        changes; ``prune_missing=True`` instead removes the documents under it.  Only files
        that vanished inside a readable folder are removed otherwise.

        Setting ``cancel`` (from any thread) stops the run before its next batch is embedded:
        what was committed stays, ``summary.cancelled`` is true, and the next run goes on from
        there.

        ``executor`` embeds the batches elsewhere, e.g. a
        :class:`~gguf_embed.ray_executor.RayExecutor` (Ray actors, several batches in flight;
        the engine here then only tokenizes, and may be loaded ``vocab_only``).  Whatever
        embeds them, batches are written here, in order, each in one transaction.

        ``on_found`` is called once the walk is done, before anything is embedded, with the
        files it found (the CLI estimates the run's time from them).  Files over
        ``max_file_bytes`` (default: 50 MB) are skipped.  ``on_stage`` hears of a long step
        after the writes (a :class:`~gguf_embed.indexer_records.Stage`: a search cache built)."""
        from .index_write import indexer_for, refresh_search_cache, rules_for

        engine = self._need_engine()
        if not prune_missing:
            self.check_paths(paths)
        rules = rules_for(self.path, include, exclude, use_ignore_files, follow_symlinks)
        if executor is not None:  # before anything changes: a cluster may refuse the model
            executor.start(engine, self.meta.get("model"))
        index_paths.remember_roots(self.store, paths)
        run_id = self.store.start_run()
        roots = [os.path.abspath(p) for p in paths]
        indexer = indexer_for(
            self.store, engine, self.chunk_settings, rules, max_file_bytes, progress=progress,
            cancel=cancel, executor=executor, on_found=on_found,
            on_links=lambda found: index_paths.remember_links(self.store, roots, found))
        summary = indexer.run(paths)
        self.store.finish_run(run_id, summary.to_dict())
        refresh_search_cache(self.store, on_stage=on_stage)
        return summary

    def check_paths(self, paths: Sequence[str | Path]) -> None:
        """Raise :class:`PathError` naming every path that is missing or unreadable, or an
        empty folder the index holds documents under (an unmounted drive?)."""
        index_paths.check_paths(self.store, paths)

    @one_thread
    def update(self, changed: Sequence[str | Path], roots: Sequence[str | Path], *,
               include: Sequence[str] = (), exclude: Sequence[str] = (),
               use_ignore_files: bool = True,
               max_file_bytes: int | None = None,
               follow_symlinks: bool = False) -> IndexSummary:
        """Apply a batch of changed paths (created, edited, deleted or moved files or folders,
        and ignore files) under the watched ``roots``, in one transaction."""
        from .index_write import apply_changes, rules_for

        engine = self._need_engine()
        rules = rules_for(self.path, include, exclude, use_ignore_files, follow_symlinks)
        return apply_changes(self.store, engine, self.chunk_settings, changed, roots, rules,
                             max_file_bytes)

    def watch(self, paths: Sequence[str | Path], stop_event: Any | None = None,
              on_change: Callable[[Any], None] | None = None, **options: Any) -> None:
        """Catch up with ``paths``, then keep the index in step with them until ``stop_event``
        is set (blocking; see :func:`gguf_embed.watch.watch` for ``on_change`` and options)."""
        from .watch import watch

        watch(self, paths, stop_event, on_change, **options)

    @contextlib.contextmanager
    def _owned(self) -> Iterator[None]:
        """What every call into the index runs inside: one thread at a time (see
        _one_thread.py), and SQLite's errors that mean the file is damaged raised as
        :class:`~gguf_embed.errors.IndexDamaged` naming it (store_guard.read_errors)."""
        with self._thread(), read_errors(self.path):
            yield

    @property
    def roots(self) -> list[str]:
        """The files and folders ever given to :meth:`add` (absolute)."""
        return index_paths.roots(self.meta)

    def bounds(self) -> Bounds:
        """The one rule for what may be served from this index (search results, MCP get):
        a document whose real path is outside the indexed roots and the symlink targets
        followed under them is not (an index written before symlinks were kept inside the
        roots may hold some: the next ``add`` of their root removes them)."""
        return index_paths.bounds(self.meta)

    @one_thread
    def remove(self, paths: Sequence[str | Path]) -> int:
        """Forget every document at or under ``paths``; returns how many."""
        from .index_write import refresh_search_cache

        scopes = [os.path.abspath(p) for p in paths]
        victims = [p for p in self.store.documents() if any(under(p, s) for s in scopes)]
        with self.store.transaction():
            removed = self.store.delete_documents(victims)
        refresh_search_cache(self.store, vectors=False)
        return removed

    @one_thread
    def merge_from(self, shards: Sequence[str | Path], *, duplicates: str = "newest",
                   on_shard: Callable[[Path, Any], None] | None = None,
                   on_stage: Callable[[Stage], None] | None = None) -> MergeSummary:
        """Copy the documents, chunks and vectors of the index files ``shards`` into this
        one, each shard in one transaction, without re-embedding (see :mod:`gguf_embed.merge`
        for the rules: same model and settings, the newer copy of a path wins); then bring
        the search caches up to date as :meth:`add` does (``on_stage`` as there)."""
        from .index_write import refresh_search_cache
        from .merge import merge_into

        if self._lock is None:
            raise IndexFileError(f"index {self.path} is open read-only; open it to write")
        summary = merge_into(self.store, shards, duplicates=duplicates, on_shard=on_shard)
        refresh_search_cache(self.store, on_stage=on_stage)
        return summary

    # ------------------------------------------------------------------ reading
    def search(self, query: str, *, k: int = 10, mode: str = "hybrid",
               path: str | None = None, exact: bool | None = None,
               group: str = "file", rerank: Any | None = None,
               rerank_options: Any | None = None) -> list[SearchResult]:
        """The ``k`` best files for ``query`` (each with its best chunk), or with
        ``group="chunk"`` the ``k`` best chunks; ``path`` limits them to a file or folder, or
        to a glob on document paths (see :func:`gguf_embed.index_paths.glob`).
        ``rerank`` (a :class:`~gguf_embed.reranker.Reranker`) rescores the top fused
        candidates (``rerank_options``: how many, window size, blend); what it did is in
        ``last_rerank``."""
        # a bad filter is refused before any embedding
        path_glob = index_paths.glob(path, self.roots)
        vector = None
        if mode != "keyword":
            vector = self.embed_query(query)
        hook = None
        if rerank is not None:
            from .reranker import SearchReranker

            hook = SearchReranker(rerank, self.store, rerank_options)
        with self._owned(), self._snapshot():
            results = search(self.store, vector, query, k=k, mode=mode,
                             path_glob=path_glob, exact=exact, group=group,
                             rerank=hook, allow=self.bounds().allows)
        if hook is None or rerank is None:
            return results
        self.last_rerank = {"candidates": len(hook.scores), "truncated": len(hook.truncated),
                            "context": rerank.max_tokens}
        return [replace(r, rerank_score=round(hook.scores[r.chunk_id], 6))
                if r.chunk_id in hook.scores else r for r in results]

    def search_many(self, queries: Sequence[str], *, k: int = 10, mode: str = "hybrid",
                    path: str | None = None, group: str = "file") -> list[list[SearchResult]]:
        """Several queries, embedded together (one model, one batch)."""
        path_glob = index_paths.glob(path, self.roots)
        vectors: list[Any] = [None] * len(queries)
        if mode != "keyword" and queries:
            vectors = list(self._query_vectors(list(queries)))
        with self._owned(), self._snapshot():
            allow = self.bounds().allows
            return [search(self.store, v, q, k=k, mode=mode, path_glob=path_glob,
                           group=group, allow=allow)
                    for q, v in zip(queries, vectors, strict=True)]

    def embed_query(self, query: str) -> Any:
        if not query.strip():
            raise InputError("the query is empty", param="query")
        return self._query_vectors([query])[0]

    def _query_vectors(self, queries: list[str]) -> Any:
        return embed_queries(self._need_engine(), queries, self.meta.get("dimensions"),
                             stacklevel=3)  # names who called embed_query or search_many

    @contextlib.contextmanager
    def _snapshot(self) -> Iterator[None]:
        """A read transaction: every statement of one search sees the same committed state."""
        with self.store.conn:
            yield

    @one_thread
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
            "read_only_reason": self.store.too_new,  # written by a newer gguf-embed
        }

    def _need_engine(self) -> EmbeddingEngine:
        if self.engine is None:
            raise InputError("this needs the embedding model: open the index with an engine")
        return self.engine

    def close(self, *, failed: bool = False) -> None:
        """Close the file and let go of the write lock.  With ``failed`` (an error ended the
        work), an index file that this object created and that holds no document is removed,
        with SQLite's side files and the folders made for it: a refused command leaves no new
        file behind."""
        remove_file = failed and bool(self._new) and self._holds_nothing()
        try:
            self.store.close()
        finally:
            self._release()
            if remove_file:
                self._discard_new()
            if self._owned_engine:
                self._owned_engine = False
                close_engine(self.engine)

    def _holds_nothing(self) -> bool:
        try:
            return not self.store.counts()["documents"]
        except Exception:  # unreadable now: keep it, it may hold something
            return False

    def _discard_new(self) -> None:
        """Remove the index file, its side files and the folders this object created."""
        new, self._new = self._new, []
        discard(self.path, new)

    def _release(self) -> None:
        if self._lock is not None:
            self._lock.release()
            self._lock = None

    def __enter__(self) -> Index:
        return self

    def __exit__(self, kind: type[BaseException] | None, *exc: object) -> None:
        self.close(failed=kind is not None)


def __getattr__(name: str) -> Any:
    """``IndexSummary`` and ``Progress`` (indexer.py), imported on first use: a search never
    loads the indexer."""
    if name in ("IndexSummary", "Progress"):
        from . import indexer

        return getattr(indexer, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = ["Index", "IndexSummary", "Progress", "SearchResult", "check_roots", "identity"]
