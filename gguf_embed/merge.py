"""Merging shard indexes into one: the step beyond one writer (see BENCHMARKS.md, issue 13).

Workers each index their part of a corpus into an index file of their own (a shard); the
shards are then merged into one file that searches like one built over everything.

* Every shard must have been made by the same model file and settings as the output (or, for
  an empty output, as the first shard): the keys in :data:`MATCH_KEYS`.  All shards are checked
  before anything is written; a mismatch is a one-line error naming the shard and the key.
* A path held by two of them keeps the copy with the newer mtime; on a tie the copy already in
  the output (or in an earlier shard) stays.  ``duplicates="refuse"`` instead refuses a shard
  that holds a path the output already has, before writing any of it.
* One shard is one transaction: an interrupted merge leaves the output valid, holding the shards
  merged before, and the same merge run again finishes the job without duplicates.
* Vectors are copied as stored, never re-embedded, so no model is loaded.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .errors import IndexFileError, IndexMismatch, InputError
from .store import Store
from .store_guard import count_non_finite, read_errors
from .store_merge import ShardCounts, duplicate_paths, merge_shard

MATCH_KEYS = ("model_fingerprint", "dims", "dimensions", "pooling", "eos", "query_prompt",
              "document_prompt", "chunking")
DUPLICATES = ("newest", "refuse")
_NOT_COPIED = ("schema_version", "roots", "created_at", "links")


@dataclass
class MergeSummary:
    shards: int = 0  # shards merged (empty ones included)
    documents: int = 0  # documents copied into the output
    chunks: int = 0
    replaced: int = 0  # output documents replaced by a newer copy from a shard
    kept: int = 0  # shard documents skipped: the output's copy was as new or newer
    empty: list[str] = field(default_factory=list)  # shards that held no index yet
    seconds: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        return {"shards": self.shards, "documents": self.documents, "chunks": self.chunks,
                "replaced": self.replaced, "kept": self.kept, "empty": self.empty,
                "seconds": round(self.seconds, 3),
                "chunks_per_second": round(self.chunks / self.seconds, 1)
                if self.seconds else 0.0}


def merge_into(store: Store, shards: Sequence[str | Path], *, duplicates: str = "newest",
               on_shard: Callable[[Path, ShardCounts], None] | None = None) -> MergeSummary:
    """Merge the index files ``shards`` into ``store`` (open for writing, its lock held)."""
    if duplicates not in DUPLICATES:
        raise InputError(f"duplicates must be one of {', '.join(DUPLICATES)}, got "
                         f"{duplicates!r}", param="duplicates")
    start = time.perf_counter()
    summary = MergeSummary()
    metas = _check_shards(store, [Path(s) for s in shards])
    run_id = store.start_run()
    for shard, meta in metas:
        summary.shards += 1
        if "model_fingerprint" not in meta or meta.get("dims") is None:
            summary.empty.append(str(shard))
            continue
        if "model_fingerprint" not in store.meta:  # an empty output takes the first identity
            store.ensure_vectors(meta["dims"])
            store.set_meta({**{k: v for k, v in meta.items() if k not in _NOT_COPIED},
                            "created_at": time.time()})
        if duplicates == "refuse":
            count, some = duplicate_paths(store, shard)
            if count:
                raise IndexFileError(
                    f"shard {shard} holds {count} document(s) the output {store.path} already "
                    f"has (e.g. {', '.join(some)}); {summary.shards - 1} shard(s) before it "
                    f"were merged, nothing from this one (merge without refusing duplicates "
                    f"to keep the newest copy)")
        counts = merge_shard(store, shard)
        roots = sorted(set(store.meta.get("roots") or []) | set(meta.get("roots") or []))
        if roots != (store.meta.get("roots") or []):
            store.set_meta({"roots": roots})
        links = dict(store.meta.get("links") or {})  # symlink targets followed, by root
        for root, targets in (meta.get("links") or {}).items():
            links[root] = sorted(set(links.get(root, [])) | set(targets))
        if links != (store.meta.get("links") or {}):
            store.set_meta({"links": links})
        summary.documents += counts.documents
        summary.chunks += counts.chunks
        summary.replaced += counts.replaced
        summary.kept += counts.kept
        if on_shard is not None:
            on_shard(shard, counts)
    summary.seconds = time.perf_counter() - start
    store.finish_run(run_id, {"merge": [str(s) for s, _ in metas], **summary.to_dict()})
    return summary


def _check_shards(store: Store, shards: list[Path]) -> list[tuple[Path, dict[str, Any]]]:
    """Each shard's meta, once every shard is known to be a readable index made like the
    output; else an error naming the first shard that is not, and nothing is written."""
    if not shards:
        raise InputError("name at least one shard index to merge", param="shards")
    out: list[tuple[Path, dict[str, Any]]] = []
    reference: dict[str, Any] | None = store.meta if "model_fingerprint" in store.meta \
        else None
    where = f"the output {store.path}"
    for shard in shards:
        if not shard.exists():
            raise IndexFileError(f"shard {shard}: no such index file")
        if os.path.samefile(shard, store.path):
            raise IndexFileError(f"shard {shard} is the output index itself")
        if any(os.path.samefile(shard, seen) for seen, _ in out):
            raise IndexFileError(f"shard {shard} is named twice")
        probe = Store.open(shard, create=False, readonly=True)
        try:
            meta = dict(probe.meta)
            too_new = probe.too_new
            with read_errors(shard, probe.conn, what="shard"):  # it reads every vector
                bad = count_non_finite(probe.conn)
        finally:
            probe.close()
        if too_new:  # it may hold what this version would not copy
            raise IndexFileError(f"shard {shard}: {too_new} (nothing was merged)")
        if bad:  # vectors are copied as stored: never one with NaN or Inf
            raise IndexFileError(
                f"shard {shard} holds {bad} vector(s) with NaN or Inf (made by an older "
                f"version); index its files again with this one, then merge (nothing was "
                f"merged)")
        if "model_fingerprint" in meta:
            if reference is None:
                reference, where = meta, f"shard {shard}"
            for key in MATCH_KEYS:
                if meta.get(key) != reference.get(key):
                    raise IndexMismatch(
                        f"shard {shard}: {key} is {meta.get(key)!r} there but "
                        f"{reference.get(key)!r} in {where}; merge only indexes built with "
                        f"the same model and settings (nothing was merged)")
        out.append((shard, meta))
    return out

