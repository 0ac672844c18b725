"""Gathering concurrent embedding requests into shared decodes.

Requests put their token sequences on a queue; one worker thread takes everything that arrives
within ``window`` seconds of the first (up to ``max_tokens``) and embeds it in one
``embed_prepared`` call, so many small concurrent requests cost about one decode, not one each.
Each request then gets its own Matryoshka cut.  Queries (``urgent``) are embedded in their own
call, first, and go before document batches waiting on the engine (a watcher's, say).
"""

from __future__ import annotations

import queue
import threading
import time
from concurrent.futures import Future
from dataclasses import dataclass, field

import numpy as np

from ._vectors import finish
from .errors import NonFiniteVector
from .protocol import EmbeddingEngine


@dataclass
class _Job:
    sequences: list[np.ndarray]
    dimensions: int | None
    urgent: bool = False
    future: Future[np.ndarray] = field(default_factory=Future)


class Batcher:
    def __init__(self, engine: EmbeddingEngine, *, window: float = 0.004,
                 max_tokens: int = 16_384) -> None:
        self.engine = engine
        self.window = window
        self.max_tokens = max_tokens
        self.decodes = 0  # engine calls made (for tests and benchmarks)
        self._queue: queue.Queue[_Job | None] = queue.Queue()
        self._thread = threading.Thread(target=self._run, name="gguf-embed-batcher",
                                        daemon=True)
        self._thread.start()

    def submit(self, sequences: list[np.ndarray], dimensions: int | None, *,
               urgent: bool = False) -> Future[np.ndarray]:
        job = _Job(sequences, dimensions, urgent)
        self._queue.put(job)
        return job.future

    def close(self) -> None:
        self._queue.put(None)
        self._thread.join(timeout=10)

    def _run(self) -> None:
        while True:
            job = self._queue.get()
            if job is None:
                return
            jobs = [job]
            tokens = sum(len(s) for s in job.sequences)
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
                    self._queue.put(None)
                    break
                jobs.append(more)
                tokens += sum(len(s) for s in more.sequences)
            for urgent in (True, False):
                group = [j for j in jobs if j.urgent is urgent]
                if group:
                    self._serve(group, urgent)

    def _serve(self, jobs: list[_Job], urgent: bool) -> None:
        sequences = [s for job in jobs for s in job.sequences]
        bad: set[int] = set()
        try:
            self.decodes += 1
            all_vectors = self.engine.embed_prepared(sequences, urgent=urgent).vectors
        except NonFiniteVector as exc:  # only the requests with such an input fail
            if exc.vectors is None:
                for job in jobs:
                    job.future.set_exception(exc)
                return
            all_vectors, bad = exc.vectors, set(exc.indices)
        except Exception as exc:  # handed to every waiting request, raised there
            for job in jobs:
                job.future.set_exception(exc)
            return
        start = 0
        for job in jobs:
            n = len(job.sequences)
            mine = [i - start for i in sorted(bad) if start <= i < start + n]
            vectors = all_vectors[start:start + n]
            start += n
            if mine:
                job.future.set_exception(NonFiniteVector(
                    f"input {mine[0]} gave a non-finite vector (NaN or Inf): the model or its "
                    f"build cannot embed it", indices=mine))
                continue
            try:
                job.future.set_result(finish(vectors, job.dimensions) if job.dimensions
                                      else vectors)
            except NonFiniteVector as exc:
                job.future.set_exception(exc)
