"""Keeping an index live while files change (watchfiles).

    stop = threading.Event()
    index.watch(["~/notes"], stop, on_change=lambda event: print(event.summary))

:func:`watch` first catches up (an ordinary incremental :meth:`Index.add`), then applies the
file events it receives, debounced and batched by watchfiles: every batch of changed paths
becomes one :meth:`Index.update` (one transaction), so readers see the index before or after a
batch, never half of it, and a ``git checkout`` of 500 files comes in as a few transactions.
Watching starts before the catch-up, so nothing that changes during it is missed.

What a batch of changed paths means (files to read, scopes to reconcile, with the ignore rules
of a walk) is :func:`plan`, in :mod:`gguf_embed.watch_plan`.

An interrupt (Ctrl-C) in the middle of a batch rolls that batch back; the files are still on
disk, and the next run's catch-up applies them, as after ``kill -9``.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .errors import GgufEmbedError, InputError, capped, quoted
from .indexer import IndexSummary
from .walk import root_problem
from .watch_plan import Plan, _root_of, plan
from .watch_plan import _outermost as _outermost  # re-exported (tests)

if TYPE_CHECKING:
    from .index import Index

DEBOUNCE_MS = 1_600  # a burst of changes is cut into batches at most this long
STEP_MS = 100  # a batch ends once no new change came for this long
TICK_MS = 500  # how often the stop event is looked at while nothing happens

logger = logging.getLogger(__name__)


@dataclass
class WatchEvent:
    """Handed to ``on_change`` after the catch-up and after every batch."""

    kind: str  # "catch-up", "batch", "error", "paused" or "resumed"
    paths: list[str] = field(default_factory=list)  # the changed paths (the root, paused)
    summary: IndexSummary | None = None
    error: str | None = None
    note: str | None = None  # why a root was paused, or that it is back
    seconds: float = 0.0
    at: float = field(default_factory=time.time)


def watch(index: Index, paths: Sequence[str | Path], stop_event: Any | None = None,
          on_change: Callable[[WatchEvent], None] | None = None, *,
          include: Sequence[str] = (), exclude: Sequence[str] = (),
          use_ignore_files: bool = True, max_file_bytes: int | None = None,
          follow_symlinks: bool = False, catch_up: bool = True,
          debounce_ms: int = DEBOUNCE_MS, step_ms: int = STEP_MS,
          force_polling: bool | None = None) -> None:
    """Catch up, then keep ``index`` in step with ``paths`` until ``stop_event`` is set (any
    object with ``is_set()``, e.g. :class:`threading.Event`).  Blocks: run it in a thread of
    its own beside a UI.  ``on_change`` gets a :class:`WatchEvent` after every batch; a batch
    that fails is reported there (``kind="error"``) and watching goes on.

    A root that goes away (renamed, moved, unmounted: missing, unreadable, or an empty folder
    while the index holds documents under it) is paused (``kind="paused"``): nothing under it
    is removed.  When it is back, watching it resumes (``kind="resumed"``) with a catch-up."""
    roots = [os.path.abspath(p) for p in paths]
    for root in roots:
        if not os.path.exists(root):
            raise InputError(f"cannot watch {quoted(root)}: not found", param="paths")
    stop = stop_event if stop_event is not None else threading.Event()
    options: dict[str, Any] = {"include": include, "exclude": exclude,
                               "use_ignore_files": use_ignore_files,
                               "follow_symlinks": follow_symlinks}
    if max_file_bytes is not None:
        options["max_file_bytes"] = max_file_bytes
    emit = on_change or (lambda event: None)
    paused: dict[str, str] = {}  # root -> why
    abs_roots = [Path(r) for r in roots]
    first = True
    # ``index`` was opened for writing, so it holds the index's one-writer lock (INDEX.lock)
    # from before the catch-up until it is closed: another `index` or `watch` waits.
    while not stop.is_set():
        live = [r for r in roots if r not in paused]
        stream = _changes(live, stop, debounce_ms, step_ms, force_polling)
        try:
            if live and next(stream, None) is None:  # the watch is in place from here on
                return
            if live and (catch_up or not first):
                start = time.perf_counter()
                try:
                    summary = index.add(live, **options)
                except GgufEmbedError as exc:
                    if first:
                        raise
                    emit(WatchEvent("error", live, error=_why(exc),
                                    seconds=time.perf_counter() - start))
                else:
                    emit(WatchEvent("catch-up", live, summary,
                                    seconds=time.perf_counter() - start))
            first = False
            for batch in stream:
                if stop.is_set():
                    continue
                for root in roots:
                    if root not in paused and (why := _root_away(index, root)):
                        paused[root] = why
                        emit(WatchEvent("paused", [root], note=(
                            f"{why}: paused, nothing under it is removed; watching resumes "
                            f"when it is back")))
                back = [r for r in paused if _root_away(index, r) is None]
                if back:
                    for root in back:
                        del paused[root]
                        emit(WatchEvent("resumed", [root], note="back: watching it again"))
                    break  # watch it again (a new watcher), after a catch-up
                changed = sorted({p for _, p in batch
                                  if str(_root_of(os.path.abspath(p), abs_roots)) not in paused})
                if changed:
                    _apply(index, changed, roots, options, emit)
            else:
                return  # stopped
        finally:
            stream.close()


def _changes(roots: list[str], stop: Any, debounce_ms: int, step_ms: int,
             force_polling: bool | None) -> Any:
    """watchfiles' batches of changes under ``roots`` (an empty set every tick), or, with no
    root to watch (all paused), empty ticks until stopped."""
    if not roots:
        return _ticks(stop)
    from watchfiles import watch as changes_of

    return changes_of(*roots, watch_filter=None, debounce=debounce_ms, step=step_ms,
                      stop_event=stop, rust_timeout=TICK_MS, yield_on_timeout=True,
                      raise_interrupt=True, force_polling=force_polling,
                      ignore_permission_denied=True)


def _ticks(stop: Any) -> Iterator[set[tuple[Any, str]]]:
    while not stop.is_set():
        time.sleep(TICK_MS / 1000)
        yield set()


def _root_away(index: Index, root: str) -> str | None:
    """Why a watched root is away (gone, unreadable, or emptied while the index holds
    documents under it: an unmounted drive), or None if it is there."""
    problem = root_problem(root)
    if problem:
        return f"{root} is {problem} (moved, renamed or unmounted?)" if problem == "not found" \
            else f"{root}: {problem}"
    try:
        index.check_paths([root])
    except GgufEmbedError:
        return f"{root} is empty, but the index holds documents under it (unmounted?)"
    return None


def _apply(index: Index, changed: list[str], roots: list[str], options: dict[str, Any],
           emit: Callable[[WatchEvent], None]) -> None:
    start = time.perf_counter()
    try:
        summary = index.update(changed, roots, **options)
    except (KeyboardInterrupt, SystemExit):
        raise
    except Exception as exc:  # reported; the next batch or run brings it in
        emit(WatchEvent("error", changed, error=_why(exc),
                        seconds=time.perf_counter() - start))
        return
    if _changed_anything(summary):
        emit(WatchEvent("batch", changed, summary, seconds=time.perf_counter() - start))


def _why(exc: BaseException) -> str:
    """An error as a watch event says it: our own errors by their message."""
    text = str(exc) if isinstance(exc, GgufEmbedError) else f"{type(exc).__name__}: {exc}"
    return capped(text)


class Background:
    """A watcher on a thread of its own inside a warm process (``serve``/``mcp --watch``): it
    opens its own writing connection to ``db`` and shares ``engine`` (whose decodes are
    serialized) with the readers."""

    def __init__(self, db: str | Path, engine: Any, paths: Sequence[str | Path], *,
                 model_ref: str | None = None, **options: Any) -> None:
        self.db = Path(db)
        self.engine = engine
        self.paths = [os.path.abspath(p) for p in paths]
        self.model_ref = model_ref
        self.options = options
        self.stop_event = threading.Event()
        self.caught_up = threading.Event()
        self.last: WatchEvent | None = None
        self.batches = 0
        self.error: str | None = None  # why the watcher stopped, if it did
        self.paused: dict[str, str] = {}  # watched roots that are away, and why
        self._thread = threading.Thread(target=self._run, name="gguf-embed-watch", daemon=True)
        self._on_change: Callable[[WatchEvent], None] | None = options.pop("on_change", None)

    def start(self) -> Background:
        self._thread.start()
        return self

    def stop(self, timeout: float = 30.0) -> None:
        self.stop_event.set()
        if self._thread.is_alive():
            self._thread.join(timeout)

    def _run(self) -> None:
        from .index import Index

        try:
            with Index(self.db, self.engine, model_ref=self.model_ref) as index:
                index.watch(self.paths, self.stop_event, self._changed, **self.options)
        except Exception as exc:  # kept for status(); the readers go on serving
            self.error = f"{type(exc).__name__}: {exc}"
            logger.error("watching stopped: %s", self.error)
        finally:
            self.caught_up.set()

    def _changed(self, event: WatchEvent) -> None:
        self.last = event
        if event.kind == "paused":
            self.paused.update(dict.fromkeys(event.paths, event.note or ""))
            logger.warning("watch: %s", event.note)
        elif event.kind == "resumed":
            for root in event.paths:
                self.paused.pop(root, None)
            logger.warning("watch: %s is back: watching it again", ", ".join(event.paths))
        elif event.kind == "catch-up":
            self.caught_up.set()
        else:
            self.batches += 1
        if event.error:
            logger.warning("watch: could not apply %d changes: %s", len(event.paths),
                           event.error)
        if self._on_change is not None:
            self._on_change(event)

    def state(self) -> dict[str, Any]:
        last = self.last
        return {
            "paths": self.paths, "running": self._thread.is_alive(),
            "caught_up": self.caught_up.is_set() and self.error is None, "batches": self.batches,
            "error": self.error, "paused": dict(self.paused),
            "last_change": None if last is None else {
                "kind": last.kind, "at": last.at, "paths": last.paths[:20],
                "summary": last.summary.to_dict() if last.summary else None,
                "error": last.error},
        }


def _changed_anything(summary: IndexSummary) -> bool:
    return bool(summary.added or summary.updated or summary.moved or summary.removed
                or summary.skipped or summary.failed or summary.symlinks_skipped)


__all__ = ["Background", "Plan", "WatchEvent", "plan", "watch"]
