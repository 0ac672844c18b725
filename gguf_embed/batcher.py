"""Gathering concurrent embedding requests into shared decodes, fairly.

Requests put their token sequences on a queue; one worker thread embeds them in steps.  From
idle, it waits ``window`` seconds after the first request for others, so many small concurrent
requests cost about one decode, not one each.  Each step takes at most ``share_tokens`` (about
one llama.cpp decode) from each waiting request, round-robin, up to ``max_tokens`` in all: a
request of 2,048 inputs is embedded piece by piece while other clients' requests join the
next step instead of waiting for all of it.  A request whose future is cancelled (its client
went away) has its remaining pieces dropped.  Queries (``urgent``) are embedded in their own
call, first, and go before document batches waiting on the engine (a watcher's, say).  Each
request then gets its own Matryoshka cut.
"""

from __future__ import annotations

import queue
import threading
import time
from collections import deque
from concurrent.futures import Future, InvalidStateError
from dataclasses import dataclass, field

import numpy as np

from ._vectors import finish
from .protocol import EmbeddingEngine

DEFAULT_SHARE = 512  # tokens: the engine's default pack per decode


@dataclass
class _Job:
    sequences: list[np.ndarray]
    dimensions: int | None
    urgent: bool = False
    future: Future[np.ndarray] = field(default_factory=Future)
    taken: int = 0  # sequences handed to the engine so far
    done: int = 0  # sequences embedded so far
    parts: list[np.ndarray] = field(default_factory=list)

    @property
    def dropped(self) -> bool:
        return self.future.cancelled()


class Batcher:
    def __init__(self, engine: EmbeddingEngine, *, window: float = 0.004,
                 max_tokens: int = 16_384, share_tokens: int | None = None) -> None:
        self.engine = engine
        self.window = window
        self.max_tokens = max_tokens
        options = getattr(engine, "options", None)
        self.share_tokens = share_tokens or getattr(options, "batch_tokens", None) \
            or DEFAULT_SHARE
        self.decodes = 0  # engine calls made (for tests and benchmarks)
        self._queue: queue.Queue[_Job | None] = queue.Queue()
        self._active: deque[_Job] = deque()
        self._thread = threading.Thread(target=self._run, name="gguf-embed-batcher",
                                        daemon=True)
        self._thread.start()

    def submit(self, sequences: list[np.ndarray], dimensions: int | None, *,
               urgent: bool = False) -> Future[np.ndarray]:
        """The vectors of ``sequences``, later; cancel the future to drop the work left."""
        job = _Job(list(sequences), dimensions, urgent)
        if not job.sequences:
            job.future.set_result(np.zeros((0, 0), dtype=np.float32))
            return job.future
        self._queue.put(job)
        return job.future

    def close(self) -> None:
        self._queue.put(None)
        self._thread.join(timeout=10)

    # ------------------------------------------------------------------ the worker
    def _run(self) -> None:
        while True:
            if not self._active:
                job = self._queue.get()  # idle: wait for work, then gather for `window`
                if job is None or not self._gather(job):
                    return
            elif not self._drain():
                return
            self._active = deque(j for j in self._active if not j.dropped)
            for urgent in (True, False):
                step = self._step(urgent)
                if step:
                    self._serve(step, urgent)
            if self._active:
                self._active.rotate(-1)  # the next step starts with the next request

    def _gather(self, job: _Job) -> bool:
        """Take ``job`` and what arrives within ``window`` (up to ``max_tokens``); False when
        the batcher is closing."""
        self._active.append(job)
        tokens = _tokens(job.sequences)
        deadline = time.monotonic() + self.window
        while tokens < self.max_tokens:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                break
            try:
                more = self._queue.get(timeout=remaining)
            except queue.Empty:
                break
            if more is None:
                return False
            self._active.append(more)
            tokens += _tokens(more.sequences)
        return True

    def _drain(self) -> bool:
        """Take every request queued since the last step, without waiting."""
        while True:
            try:
                more = self._queue.get_nowait()
            except queue.Empty:
                return True
            if more is None:
                return False
            self._active.append(more)

    def _step(self, urgent: bool) -> list[tuple[_Job, int]]:
        """(request, sequences taken) for one engine call: up to ``share_tokens`` from each
        request (at least one sequence), ``max_tokens`` in all (at least one request)."""
        step: list[tuple[_Job, int]] = []
        total = 0
        for job in self._active:
            if job.urgent is not urgent or job.taken == len(job.sequences):
                continue
            if step and total >= self.max_tokens:
                break
            start = end = job.taken
            mine = 0
            while end < len(job.sequences) and (end == start or (
                    mine + len(job.sequences[end]) <= self.share_tokens
                    and total + mine + len(job.sequences[end]) <= self.max_tokens)):
                mine += len(job.sequences[end])
                end += 1
            job.taken = end
            total += mine
            step.append((job, end - start))
        return step

    def _serve(self, step: list[tuple[_Job, int]], urgent: bool) -> None:
        sequences = [s for job, n in step for s in job.sequences[job.taken - n:job.taken]]
        try:
            self.decodes += 1
            result = self.engine.embed_prepared(sequences, urgent=urgent)
        except Exception as exc:  # handed to every request in the step, raised there
            for job, _ in step:
                self._finish(job, error=exc)
            return
        start = 0
        for job, n in step:
            job.parts.append(result.vectors[start:start + n])
            job.done += n
            start += n
            if job.done == len(job.sequences):
                vectors = np.concatenate(job.parts) if len(job.parts) > 1 else job.parts[0]
                self._finish(job, vectors=finish(vectors, job.dimensions)
                             if job.dimensions else vectors)

    def _finish(self, job: _Job, *, vectors: np.ndarray | None = None,
                error: BaseException | None = None) -> None:
        with_job = [j for j in self._active if j is not job]
        self._active = deque(with_job)
        try:
            if error is not None:
                job.future.set_exception(error)
            else:
                job.future.set_result(vectors)  # type: ignore[arg-type]
        except InvalidStateError:  # cancelled meanwhile: nobody waits for it
            pass


def _tokens(sequences: list[np.ndarray]) -> int:
    return sum(len(s) for s in sequences)
