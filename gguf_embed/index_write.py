"""What the writing methods of :class:`gguf_embed.index.Index` share: the walk's rules for an
index (which skip its own files), its :class:`~gguf_embed.indexer.Indexer`, a batch of watched
changes applied in one transaction, and the search caches brought up to date after a run.

Imported by those methods only, and importing in turn the indexer, the walk, the extractors
and watch.py only when called: searching loads none of them."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .index_paths import remember_links

if TYPE_CHECKING:
    from .chunking import ChunkSettings
    from .indexer import Indexer, IndexSummary
    from .protocol import EmbeddingEngine
    from .store import Store
    from .walk import Rules


def rules_for(path: Path, include: Sequence[str], exclude: Sequence[str],
              use_ignore_files: bool, follow_symlinks: bool = False) -> Rules:
    """The walk's rules for the index at ``path``: never its own file and side files."""
    from .walk import Rules

    skip = frozenset(os.path.realpath(str(path) + s)
                     for s in ("", "-wal", "-shm", "-journal", ".lock", ".bits", ".keywords"))
    return Rules(tuple(include), tuple(exclude), use_ignore_files, skip, follow_symlinks)


def indexer_for(store: Store, engine: EmbeddingEngine, settings: ChunkSettings, rules: Rules,
                max_file_bytes: int | None, **options: Any) -> Indexer:
    from .extract import DEFAULT_MAX_BYTES
    from .indexer import Indexer

    return Indexer(store, engine, settings,
                   dimensions=store.meta.get("dimensions"), rules=rules,
                   max_file_bytes=DEFAULT_MAX_BYTES if max_file_bytes is None
                   else max_file_bytes, **options)


def apply_changes(store: Store, engine: EmbeddingEngine, settings: ChunkSettings,
                  changed: Sequence[str | Path], roots: Sequence[str | Path], rules: Rules,
                  max_file_bytes: int | None) -> IndexSummary:
    """Apply a batch of changed paths under the watched ``roots`` (see ``Index.update``), in
    one transaction."""
    from .indexer import IndexSummary
    from .watch import plan

    todo = plan(changed, roots, rules)
    if not todo.scopes:
        return IndexSummary()
    followed: dict[str, list[str]] = {}
    for link in todo.links:
        if link.followed:
            followed.setdefault(str(link.root), []).append(link.target)
    if followed:
        remember_links(store, [], followed)
    indexer = indexer_for(store, engine, settings, rules, max_file_bytes)
    indexer.summary.skipped += [(str(r.path), r.reason) for r in todo.refused]
    indexer.summary.symlinks_skipped += sum(1 for link in todo.links
                                            if link.outside and not link.followed)
    with store.transaction():
        summary = indexer.update(todo.found, todo.scopes, prune=True,
                                 existing=store.documents_under(todo.scopes))
    refresh_search_cache(store, vectors=False)  # watch: the sign bits refresh in memory
    return summary


def refresh_search_cache(store: Store, *, vectors: bool = True) -> None:
    """Bring ``INDEX.bits`` (vector_cache.py) and ``INDEX.keywords``
    (store_keyword_cache.py) up to date after a run on a large index, so that the first
    search does not pay for reading every sign bit, or a common word's every row, out of
    SQLite."""
    from . import search as search_module
    from . import store_keyword_cache, vector_cache

    with store.conn:
        if vector_cache.state_of(store) is None:
            return
        chunks = store.chunk_count()
        if vectors and chunks >= search_module.EXACT_BELOW:
            vector_cache.current(store)
        if chunks >= search_module.KEYWORD_TOPK_FROM \
                and store.fts_format == search_module.CJK_COLUMN:
            store_keyword_cache.update(store.conn, store.path)
