"""Gathering concurrent embedding requests into shared decodes, fairly.

Requests put their token sequences on a queue; one worker thread embeds them in steps.  From
idle, it waits ``window`` seconds after the first request for others, so many small concurrent
requests cost about one decode, not one each.  A request larger than ``share_tokens`` (about
one llama.cpp decode) is embedded piece by piece, and other clients' requests go between its
pieces instead of waiting for all of it (see :meth:`Batcher._step`).  Where the engine has a
side lane (``Engine.embed_side``: a second context on a share of the CPU threads), a small
request that comes while a large one is being embedded does not even wait for the piece in
flight: a second worker embeds it in the side lane at the same time, while the large
request's next pieces leave it those threads (see :meth:`Batcher.submit`).  A request whose
future is cancelled (its client went away) has its remaining pieces dropped.  Queries (``urgent``)
are embedded in their own call, first, and go before document batches waiting on the engine
(a watcher's, say).  Each request then gets its own Matryoshka cut.
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
from .errors import NonFiniteVector
from .protocol import EmbeddingEngine

DEFAULT_SHARE = 512  # tokens: the engine's default pack per decode
SHARE_PIECES = 4  # a large request's pieces on fewer threads after a small request came


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
        self.decodes = 0  # main-lane engine calls made (for tests and benchmarks)
        self.side_decodes = 0  # side-lane engine calls made
        self._piece = self.share_tokens  # tokens of a large request per step, adaptive
        self._long_turn = False  # small requests just went: a large one's piece is next
        self._queue: queue.Queue[_Job | None] = queue.Queue()
        self._active: deque[_Job] = deque()
        self._side_threads = int(getattr(engine, "side_threads", 0) or 0)
        self.side_lane = bool(self._side_threads)  # off: small requests go between pieces
        self._main_threads = max(1, int(getattr(engine, "n_threads", 1) or 1)
                                 - self._side_threads)
        self._long_active = False  # the worker holds a large request (read by submit)
        self._sharing = 0  # main-lane steps left on fewer threads (a small request came)
        self._side: queue.Queue[_Job | None] = queue.Queue()
        self._threads = [threading.Thread(target=self._run, name="gguf-embed-batcher",
                                          daemon=True)]
        if self._side_threads:
            self._threads.append(threading.Thread(target=self._run_side, daemon=True,
                                                  name="gguf-embed-batcher-side"))
        for thread in self._threads:
            thread.start()

    def submit(self, sequences: list[np.ndarray], dimensions: int | None, *,
               urgent: bool = False) -> Future[np.ndarray]:
        """The vectors of ``sequences``, later; cancel the future to drop the work left."""
        job = _Job(list(sequences), dimensions, urgent)
        if not job.sequences:
            job.future.set_result(np.zeros((0, 0), dtype=np.float32))
            return job.future
        if self.side_lane and self._long_active \
                and _tokens(job.sequences) <= self.share_tokens:
            # beside the large request, instead of after its piece in flight; its next
            # pieces leave the side lane its threads
            self._sharing = SHARE_PIECES
            self._side.put(job)
        else:
            self._queue.put(job)
        return job.future

    def close(self) -> None:
        self._queue.put(None)
        self._side.put(None)
        for thread in self._threads:
            thread.join(timeout=10)

    # ------------------------------------------------------------------ the worker
    def _run(self) -> None:
        while True:
            if not self._active:
                self._long_active, self._sharing = False, 0
                job = self._queue.get()  # idle: wait for work, then gather for `window`
                if job is None or not self._gather(job):
                    return
            elif not self._drain():
                return
            # a request finished, failed or dropped is done
            self._active = deque(j for j in self._active if not j.future.done())
            self._long_active = any(_tokens(j.sequences[j.taken:]) > self.share_tokens
                                    for j in self._active)
            for urgent in (True, False):
                step = self._step(urgent)
                if step:
                    self._serve(step, urgent)
            if self._active:
                self._active.rotate(-1)  # the next step starts with the next request

    def _run_side(self) -> None:
        """The side lane's worker: the small requests waiting, in one engine call (queries
        first, up to ``max_tokens``)."""
        while True:
            first = self._side.get()
            if first is None:
                return
            jobs = [first]
            closing = False
            while True:
                try:
                    more = self._side.get_nowait()
                except queue.Empty:
                    break
                if more is None:
                    closing = True
                    break
                jobs.append(more)
            jobs.sort(key=lambda j: not j.urgent)
            while jobs:
                step: list[tuple[_Job, int]] = []
                total = 0
                while jobs and (not step or total + _tokens(jobs[0].sequences)
                                <= self.max_tokens):
                    job = jobs.pop(0)
                    if not job.dropped:
                        job.taken = len(job.sequences)
                        total += _tokens(job.sequences)
                        step.append((job, len(job.sequences)))
                if step:
                    self._serve(step, False, side=True)
            if closing:
                return

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
        """(request, sequences taken) for one engine call, up to ``max_tokens`` in all.

        Requests that this step can finish (at most ``share_tokens`` left) go alone, in one
        call, and large requests get the next turn, a piece each, round-robin: a small request
        waits for at most one piece of a large one.  While small requests keep coming, the
        pieces shrink (to a quarter of ``share_tokens``, or one sequence where that is more)
        so that they wait less, without making the large one's decodes tiny; they grow back to
        ``share_tokens`` when the large requests have the engine to themselves."""
        mine = [j for j in self._active if j.urgent is urgent
                and j.taken < len(j.sequences) and not j.future.done()]
        if not mine:
            return []
        short = [j for j in mine if _tokens(j.sequences[j.taken:]) <= self.share_tokens]
        long = [j for j in mine if _tokens(j.sequences[j.taken:]) > self.share_tokens]
        if short and (not long or not self._long_turn):
            self._long_turn = bool(long)
            if long:  # small requests are waiting beside large ones: smaller pieces
                self._piece = max(self.share_tokens // 4, self._piece // 2)
            return self._take(short, self.max_tokens)
        self._long_turn = False
        if not short:
            self._piece = min(self.share_tokens, self._piece * 2)
        return self._take(long, self._piece)

    def _take(self, jobs: list[_Job], per_job: int) -> list[tuple[_Job, int]]:
        step: list[tuple[_Job, int]] = []
        total = 0
        for job in jobs:
            if step and total >= self.max_tokens:
                break
            start = end = job.taken
            size = 0
            while end < len(job.sequences) and (end == start or (
                    size + len(job.sequences[end]) <= per_job
                    and total + size + len(job.sequences[end]) <= self.max_tokens)):
                size += len(job.sequences[end])
                end += 1
            job.taken = end
            total += size
            step.append((job, end - start))
        return step

    def _serve(self, step: list[tuple[_Job, int]], urgent: bool, *, side: bool = False) -> None:
        sequences = [s for job, n in step for s in job.sequences[job.taken - n:job.taken]]
        bad: set[int] = set()
        try:
            if side:
                self.side_decodes += 1
                result = self.engine.embed_side(sequences).vectors  # type: ignore[attr-defined]
            elif self._sharing > 0:  # the side lane is busy, or was a moment ago
                self.decodes += 1
                self._sharing -= 1
                result = self.engine.embed_prepared(  # type: ignore[call-arg]
                    sequences, urgent=urgent, threads=self._main_threads).vectors
            else:
                self.decodes += 1
                result = self.engine.embed_prepared(sequences, urgent=urgent).vectors
        except NonFiniteVector as exc:  # only the requests with such an input fail
            if exc.vectors is None:
                for job, _ in step:
                    self._finish(job, error=exc)
                return
            result, bad = exc.vectors, set(exc.indices)
        except Exception as exc:  # handed to every request in the step, raised there
            for job, _ in step:
                self._finish(job, error=exc)
            return
        start = 0
        for job, n in step:
            mine = [job.done + i - start for i in sorted(bad) if start <= i < start + n]
            job.parts.append(result[start:start + n])
            job.done += n
            start += n
            if mine:
                self._finish(job, error=NonFiniteVector(
                    f"input {mine[0]} gave a non-finite vector (NaN or Inf): the model or its "
                    f"build cannot embed it", indices=mine))
                continue
            if job.done == len(job.sequences):
                vectors = np.concatenate(job.parts) if len(job.parts) > 1 else job.parts[0]
                try:
                    done = finish(vectors, job.dimensions) if job.dimensions else vectors
                except NonFiniteVector as exc:
                    self._finish(job, error=exc)
                    continue
                self._finish(job, vectors=done)

    def _finish(self, job: _Job, *, vectors: np.ndarray | None = None,
                error: BaseException | None = None) -> None:
        try:
            if error is not None:
                job.future.set_exception(error)
            else:
                job.future.set_result(vectors)  # type: ignore[arg-type]
        except InvalidStateError:  # cancelled meanwhile: nobody waits for it
            pass


def _tokens(sequences: list[np.ndarray]) -> int:
    return sum(len(s) for s in sequences)
