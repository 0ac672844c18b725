"""What the writing methods of :class:`gguf_embed.index.Index` share: the walk's rules for an
index (which skip its own files), its :class:`~gguf_embed.indexer.Indexer`, a batch of watched
changes applied in one transaction, and the search caches brought up to date after a run.

Imported by those methods only, and importing in turn the indexer, the walk, the extractors
and watch.py only when called: searching loads none of them."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .index_paths import remember_links
from .store_guard import BESIDE

if TYPE_CHECKING:
    from .chunking import ChunkSettings
    from .indexer import Indexer, IndexSummary
    from .indexer_records import Stage
    from .protocol import EmbeddingEngine
    from .store import Store
    from .walk import Rules


def rules_for(path: Path, include: Sequence[str], exclude: Sequence[str],
              use_ignore_files: bool, follow_symlinks: bool = False) -> Rules:
    """The walk's rules for the index at ``path``: never its own file and side files."""
    from .walk import Rules

    skip = frozenset(os.path.realpath(str(path) + s) for s in ("", *BESIDE))
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
    from .watch_plan import plan

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


def refresh_search_cache(store: Store, *, vectors: bool = True,
                         on_stage: Callable[[Stage], None] | None = None) -> None:
    """Bring ``INDEX.bits`` (vector_cache.py) and ``INDEX.keywords``
    (store_keyword_cache.py) up to date after a run on a large index, so that the first
    search does not pay for reading every sign bit, or a common word's every row, out of
    SQLite.  ``on_stage`` hears of each build or refresh before it starts (at a million
    chunks each may take tens of seconds).

    Called after the run's writes are committed, outside their transactions: a cache that
    fails to build (a full disk, a bug) leaves the run as it is, and searches take the
    slower paths, exactly as with no cache (both check the index's state before use)."""
    from . import search as search_module
    from . import store_keyword_cache, vector_cache
    from .indexer_records import Stage

    try:
        with store.conn:
            if vector_cache.state_of(store) is None:
                return
            chunks = store.chunk_count()
            if vectors and chunks >= search_module.EXACT_BELOW:
                with contextlib.suppress(Exception):  # the keywords' is made all the same
                    if on_stage is not None and (how := _bits_work(store)):
                        on_stage(Stage("bits", how, chunks))
                    vector_cache.current(store)
            if chunks >= search_module.KEYWORD_TOPK_FROM \
                    and store.fts_format == search_module.CJK_COLUMN:
                before = None if on_stage is None else (
                    lambda how: on_stage(Stage("keywords", how, chunks)))
                store_keyword_cache.update(store.conn, store.path, before=before)
    except Exception:  # a cache: the run's writes stand without it
        return


def _bits_work(store: Store) -> str | None:
    """What ``vector_cache.current`` is about to do with ``INDEX.bits``, judged from the
    file (mapped, its header and a sample checked: milliseconds): ``"build"``,
    ``"refresh"``, or None where it is of the state the read transaction sees."""
    from . import vector_cache

    state = vector_cache.state_of(store)
    old = vector_cache.load(vector_cache.cache_path(store.path), store.dims or 0)
    if state is None or (old is not None and old.state == state):
        return None
    if old is None or old.state.epoch != state.epoch or old.state.inserted > state.inserted \
            or old.state.deleted > state.deleted:
        return "build"
    return "refresh"
