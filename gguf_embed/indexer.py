"""Deciding what changed under some paths and feeding extract → chunk → embed → store.

* unchanged files (same size and mtime, or same content hash) cost nothing;
* a chunk whose text is already in the index reuses its vector (moved, copied and partly
  edited files are not re-embedded);
* documents are written in batches, each batch one transaction: a killed run leaves a
  consistent file and the next run finishes the job;
* bad files never stop the run: they are listed in the summary with the reason;
* a run can be cancelled (a ``threading.Event``): it stops before the next batch is embedded,
  keeps what it committed, and the next run goes on from there;
* batches are embedded by an executor (see executor.py): here, one at a time, or on Ray
  actors with several in flight; either way they are written in the order they were made,
  each in its own transaction, by the same code.
"""

from __future__ import annotations

import errno
import hashlib
import os
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from pathlib import Path

from ._vectors import is_finite_blob, vec_blob
from .bounds import innermost, under
from .chunking import Chunk, ChunkSettings, chunk
from .errors import ClusterError, EngineUnavailable, GgufEmbedError, NonFiniteVector
from .executor import Executor, LocalExecutor
from .extract import DEFAULT_MAX_BYTES, Extracted, Skip, extract, too_large
from .indexer_records import Flight, IndexSummary, Pending, Progress
from .protocol import EmbeddingEngine
from .safe_open import Credentials, NotRegular, Outside, TooLarge, Unservable, read_inside
from .store import Store
from .walk import SECRET_REASON, Bounds, Found, Link, Refused, Rules, walk_once

BATCH_CHUNKS = 64
BATCH_TOKENS = 8192


# A file that changed between the walk and its read (see safe_open.py), by what it became.
_UNSERVABLE: dict[type[Unservable], str] = {
    Outside: "leads outside the indexed folders through a symlink (changed while indexing): "
             "not followed",
    Credentials: SECRET_REASON,
    NotRegular: "not a regular file",
}


class Indexer:
    """Brings the documents under some paths in ``store`` up to date, using ``engine``."""

    def __init__(self, store: Store, engine: EmbeddingEngine, settings: ChunkSettings, *,
                 dimensions: int | None = None, rules: Rules | None = None,
                 max_file_bytes: int = DEFAULT_MAX_BYTES,
                 progress: Callable[[Progress], None] | None = None,
                 cancel: threading.Event | None = None,
                 executor: Executor | None = None,
                 on_links: Callable[[dict[str, list[str]]], None] | None = None,
                 on_found: Callable[[list[Path]], None] | None = None) -> None:
        """``on_links`` is told, once the walk is done and before anything is written, the
        targets of the symlinks it followed, by root (``rules.follow_symlinks``); ``on_found``
        then gets the files the walk found (e.g. to estimate the run's time)."""
        self.store = store
        self.engine = engine
        if executor is None:
            executor = LocalExecutor()
            executor.start(engine, None)
        self.executor = executor
        self._flights: deque[Flight] = deque()
        self._embedding: dict[str, Flight] = {}  # chunk hash -> the flight embedding it
        self.settings = settings
        self.dimensions = dimensions
        self.rules = rules or Rules()
        self.max_file_bytes = max_file_bytes
        self.progress = progress
        self.cancel = cancel
        self.summary = IndexSummary()
        self.on_links = on_links
        self.on_found = on_found
        self._moved_from: set[str] = set()
        self._scopes: list[str] = []
        self._bounds_now: tuple[Bounds, set[str]] | None = None

    def count_tokens(self, text: str) -> int:
        return self.count_many([text])[0]

    def count_many(self, texts: list[str]) -> list[int]:
        """Tokens of each text as a document (one call: a remote engine asks its server once)."""
        fmt = self.engine.spec.format_document
        return self.engine.count_tokens([fmt(t) for t in texts])

    def run(self, roots: Sequence[str | Path]) -> IndexSummary:
        start = time.perf_counter()
        found: list[Found] = []
        unseen: list[str] = []  # folders not looked into: their documents stay
        unfollowed: list[str] = []  # symlinks not followed: documents under them go
        followed: dict[str, list[str]] = {}
        for item in walk_once(roots, self.rules):  # overlapping roots: each file once
            if isinstance(item, Link):
                if item.followed:
                    followed.setdefault(str(item.root), []).append(item.target)
                else:
                    unfollowed.append(str(item.path))
                    self.summary.symlinks_skipped += item.outside
            elif isinstance(item, Refused):
                self.summary.skipped.append((str(item.path), item.reason))
                if item.unseen:
                    unseen.append(str(item.path))
            else:
                found.append(item)
        if self.on_links is not None:
            self.on_links(followed)
        if self.on_found is not None:
            self.on_found([f.path for f in found])
        return self.update(found, [os.path.abspath(r) for r in roots], start=start,
                           unseen=unseen, unfollowed=unfollowed)

    def update(self, found: Sequence[Found], scopes: Sequence[str], *, prune: bool = False,
               existing: dict[str, tuple[int, str, int, float]] | None = None,
               start: float | None = None, unseen: Sequence[str] = (),
               unfollowed: Sequence[str] = ()) -> IndexSummary:
        """Index ``found`` (already walked) and forget documents under ``scopes`` that are
        gone: deleted, under a symlink now ``unfollowed`` (indexed by an older version, or
        before ``follow_symlinks`` was turned off), or with ``prune`` also not found (now
        ignored).  ``existing`` may be just the documents under ``scopes`` (watch batches).
        Documents under ``unseen`` (folders the walk could not look into) are kept."""
        start = time.perf_counter() if start is None else start
        summary = self.summary
        self._scopes, self._bounds_now = list(scopes), None
        if existing is None:
            existing = self.store.documents()
        seen = {str(f.path) for f in found}
        dropped = set(unfollowed)
        gone = {p: v for p, v in existing.items()
                if p not in seen and any(under(p, s) for s in scopes)
                and not any(under(p, s) for s in unseen)
                and (prune or innermost(p, dropped) is not None or _vanished(p))}
        gone_by_hash = {v[1]: p for p, v in gone.items()}

        batch: list[Pending] = []
        batch_chunks = batch_tokens = 0
        done = 0
        try:
            for item in found:
                if self._cancelled():
                    break
                done += 1
                path = str(item.path)
                pending = self._examine(item.path, existing.get(path), gone_by_hash)
                if pending is not None:
                    batch.append(pending)
                    batch_chunks += len(pending.chunks)
                    batch_tokens += sum(c.n_tokens for c in pending.chunks)
                if batch and (batch_chunks >= BATCH_CHUNKS or batch_tokens >= BATCH_TOKENS):
                    if self._cancelled():
                        break
                    self._send(batch, (done, len(found), start, path))
                    batch, batch_chunks, batch_tokens = [], 0, 0
            if batch and not self._cancelled():
                self._send(batch, None)
            self._drain()
        finally:  # an error or an interrupt: drop what is still in flight
            for flight in self._flights:
                if flight.job is not None:
                    flight.job.cancel()
            self._flights.clear()
            self._embedding.clear()
        self._report(done, len(found), start, "")
        still_gone = [p for p in gone if p not in self._moved_from]
        if still_gone and not summary.cancelled:
            with self.store.transaction():
                summary.removed += self.store.delete_documents(still_gone)
        summary.seconds = time.perf_counter() - start
        return summary

    def _cancelled(self) -> bool:
        """Whether to stop now (between files and batches; never inside a transaction)."""
        if self.cancel is not None and self.cancel.is_set():
            self.summary.cancelled = True
        return self.summary.cancelled

    def _examine(self, path: Path, known: tuple[int, str, int, float] | None,
                 gone_by_hash: dict[str, str]) -> Pending | None:
        summary = self.summary
        try:
            stat = path.stat()
        except OSError as exc:
            summary.failed.append((str(path), f"unreadable: {exc.strerror or exc}"))
            return None
        if known is not None and known[2] == stat.st_size and known[3] == stat.st_mtime:
            summary.unchanged += 1
            return None
        if stat.st_size > self.max_file_bytes:
            summary.skipped.append((str(path), too_large(stat.st_size, self.max_file_bytes).reason))
            return None
        try:
            bounds, named = self._bounds()
            read = read_inside(str(path), bounds, max_bytes=self.max_file_bytes,
                               credentials="allow" if str(path) in named else "walked")
        except TooLarge as exc:
            summary.skipped.append((str(path), too_large(exc.size, exc.limit).reason))
            return None
        except Unservable as exc:
            summary.skipped.append((str(path), _UNSERVABLE[type(exc)]))
            return None
        except PermissionError:
            summary.failed.append((str(path), "unreadable: permission denied"))
            return None
        except OSError as exc:
            summary.failed.append((str(path), f"unreadable: {exc.strerror or exc}"))
            return None
        data, stat = read.data, read.info  # what was read, and its size and time
        digest = hashlib.sha256(data).hexdigest()
        if known is not None and known[1] == digest:
            with self.store.transaction():
                self.store.touch_document(str(path), stat.st_mtime)
            summary.unchanged += 1
            return None
        if known is None and digest in gone_by_hash:
            old = gone_by_hash.pop(digest)
            with self.store.transaction():
                self.store.move_document(old, str(path), stat.st_mtime)
            self._moved_from.add(old)
            summary.moved += 1
            return None
        try:
            doc = extract(path, data, self.max_file_bytes)
            if isinstance(doc, Skip):
                (summary.failed if doc.failed else summary.skipped).append((str(path), doc.reason))
                return None
            pieces = self._chunks(doc)
        except EngineUnavailable:
            raise  # a server that is down fails the run, not each file
        except (ValueError, LookupError, TypeError, RecursionError, GgufEmbedError) as exc:
            # an extractor or tokenizer tripping on one odd file must not end the run
            summary.failed.append((str(path), f"cannot read: {type(exc).__name__}: {exc}"))
            return None
        if not pieces:
            summary.skipped.append((str(path), "empty (no text)"))
            return None
        return Pending(str(path), digest, stat.st_size, stat.st_mtime, doc.kind, pieces,
                        existed=known is not None)

    def _bounds(self) -> tuple[Bounds, set[str]]:
        """Where a file read by this run may really be (the index's roots and this run's
        scopes, and the symlink targets followed under them, as recorded before the read),
        and the files the user named (indexed as asked, even a credential file)."""
        if self._bounds_now is None:
            meta = self.store.meta
            roots = [*(meta.get("roots") or []), *self._scopes]
            targets = [t for ts in (meta.get("links") or {}).values() for t in ts]
            self._bounds_now = (Bounds(roots, targets), set(roots))
        return self._bounds_now

    def _chunks(self, doc: Extracted) -> list[Chunk]:
        return [c for c in chunk(doc, self.count_tokens, self.settings, self.count_many)
                if c.text.strip()]

    def _send(self, batch: list[Pending], report: tuple[int, int, float, str] | None) -> None:
        """Hand ``batch`` to the executor; write the oldest batches while the window is full
        (each written batch reports the progress made up to it)."""
        flight = self._submit(batch)
        flight.report = report
        self._flights.append(flight)
        while len(self._flights) >= self.executor.window:
            self._land(self._flights.popleft())

    def _drain(self) -> None:
        """Write what is in flight, in order; after a cancel, only the batches already done."""
        while self._flights:
            if self.summary.cancelled and not self._flights[0].job_done():
                return  # the finally of update() drops the rest
            self._land(self._flights.popleft())

    def _submit(self, batch: list[Pending]) -> Flight:
        hashes = [c.hash for p in batch for c in p.chunks]
        vectors = {h: blob for h, blob in self.store.vectors_by_hash(hashes).items()
                   if is_finite_blob(blob)}  # a NaN stored by an older version: embed again
        todo: dict[str, str] = {}
        borrowed: dict[str, Flight] = {}
        for pending in batch:
            for c in pending.chunks:
                if c.hash in vectors or c.hash in todo or c.hash in borrowed:
                    continue
                earlier = self._embedding.get(c.hash)
                if earlier is not None:
                    borrowed[c.hash] = earlier
                else:
                    todo[c.hash] = c.text
        job = self.executor.submit(list(todo.values()), self.dimensions) if todo else None
        flight = Flight(batch, vectors, list(todo), job, borrowed, len(hashes))
        self._embedding.update(dict.fromkeys(todo, flight))
        return flight

    def _land(self, flight: Flight) -> None:
        """Wait for ``flight``'s vectors and write its documents in one transaction (or list
        them as failed)."""
        try:
            self._collect(flight)
        finally:
            for key in flight.todo:
                if self._embedding.get(key) is flight:
                    del self._embedding[key]
        summary = self.summary
        if flight.error:
            for pending in flight.batch:
                summary.failed.append((pending.path, flight.error))
        else:
            self._write(flight)
        if flight.report is not None:
            self._report(*flight.report)

    def _write(self, flight: Flight) -> None:
        summary = self.summary
        vectors = flight.vectors
        with self.store.transaction():
            for pending in flight.batch:
                bad = next((i for i, c in enumerate(pending.chunks)
                            if c.hash in flight.nonfinite), None)
                if bad is not None:  # never stored: the file is listed, the run goes on
                    piece = pending.chunks[bad]
                    summary.failed.append((pending.path, (
                        f"the model gave a non-finite vector (NaN or Inf) for chunk {bad} "
                        f"(lines {piece.start_line}-{piece.end_line}); not indexed")))
                    continue
                self.store.write_document(
                    path=pending.path, hash=pending.hash, size=pending.size,
                    mtime=pending.mtime, kind=pending.kind, chunks=pending.chunks,
                    vectors=[vectors[c.hash] for c in pending.chunks])
                if pending.existed:
                    summary.updated += 1
                else:
                    summary.added += 1
                summary.chunks += len(pending.chunks)
        summary.chunks_reused += flight.n_chunks - len(flight.todo)

    def _collect(self, flight: Flight) -> None:
        if flight.job is not None:
            try:
                result = flight.job.result()
            except (ClusterError, EngineUnavailable):
                raise
            except NonFiniteVector as exc:  # the other texts of the batch are fine
                if exc.vectors is None or len(exc.vectors) != len(flight.todo):
                    flight.error = f"embedding failed: {exc}"
                    return
                bad = set(exc.indices)
                for i, (key, vector) in enumerate(zip(flight.todo, exc.vectors, strict=True)):
                    if i in bad:
                        flight.nonfinite.add(key)
                    else:
                        flight.vectors[key] = vec_blob(vector)
            except GgufEmbedError as exc:
                flight.error = f"embedding failed: {exc}"
                return
            else:
                for key, vector in zip(flight.todo, result.vectors, strict=True):
                    flight.vectors[key] = vec_blob(vector)
                self.summary.tokens_embedded += result.total_tokens
        for key, earlier in flight.borrowed.items():
            if key in earlier.nonfinite:
                flight.nonfinite.add(key)
                continue
            if key not in earlier.vectors:  # the batch that embedded it failed
                flight.error = earlier.error
                return
            flight.vectors[key] = earlier.vectors[key]

    def _report(self, done: int, total: int, start: float, path: str) -> None:
        if self.progress:
            self.progress(Progress(done, total, self.summary.chunks,
                                   self.summary.tokens_embedded,
                                   time.perf_counter() - start, path))


def _vanished(path: str) -> bool:
    """Whether ``path`` is gone (not merely unreadable, as under a folder without access)."""
    try:
        os.stat(path)
    except OSError as exc:
        return exc.errno in (errno.ENOENT, errno.ENOTDIR)
    return False

