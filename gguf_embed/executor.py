"""Where an index run's batches are embedded: here (the default), or elsewhere at once.

The indexer decides the batches and writes them, in order, one transaction each; an executor
only turns a batch's texts into vectors.  :class:`LocalExecutor` embeds on the engine the
index was opened with, one batch at a time; :class:`~gguf_embed.ray_executor.RayExecutor`
keeps ``window`` batches in flight on Ray actors.  numpy only: importing this loads nothing.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Protocol

from .protocol import EmbeddingEngine, Embeddings


class EmbedJob(Protocol):
    """One batch handed to an executor."""

    def wait(self, timeout: float | None) -> bool:
        """Whether the batch is done, waiting up to ``timeout`` seconds (None: until it is)."""

    def result(self) -> Embeddings:
        """The vectors (waiting for them).  A :class:`~gguf_embed.errors.GgufEmbedError`
        fails this batch's files, as a local run does; a
        :class:`~gguf_embed.errors.ClusterError` ends the run (what was committed stays)."""

    def cancel(self) -> None:
        """Drop the batch (its result will not be asked for)."""


class Executor(Protocol):
    """Embeds an index run's batches; ``Index.add(..., executor=...)``."""

    @property
    def window(self) -> int:
        """How many batches may be in flight at once (1: embed, write, embed, ...)."""

    def start(self, engine: EmbeddingEngine, model: str | None) -> None:
        """Get ready for a run whose index was made with ``engine`` (on this process) and
        records the model reference ``model``; called by every ``Index.add``."""

    def submit(self, texts: Sequence[str], dimensions: int | None) -> EmbedJob:
        """Start embedding ``texts`` as documents (cut to ``dimensions``)."""


class _Deferred:
    """A job done when its result is first asked for (the local executor: no overlap)."""

    def __init__(self, work: Callable[[], Embeddings]) -> None:
        self._work: Callable[[], Embeddings] | None = work

    def wait(self, timeout: float | None) -> bool:
        return True  # ready to be computed now, on this thread

    def result(self) -> Embeddings:
        if self._work is None:
            raise RuntimeError("this batch was cancelled")
        work, self._work = self._work, None
        return work()

    def cancel(self) -> None:
        self._work = None


class LocalExecutor:
    """The default: each batch embedded on this process's engine when it is written."""

    window = 1

    def __init__(self) -> None:
        self._engine: EmbeddingEngine | None = None

    def start(self, engine: EmbeddingEngine, model: str | None) -> None:
        self._engine = engine

    def submit(self, texts: Sequence[str], dimensions: int | None) -> EmbedJob:
        engine = self._engine
        if engine is None:
            raise RuntimeError("LocalExecutor.start was not called")
        return _Deferred(lambda: engine.encode(list(texts), dimensions=dimensions))


__all__ = ["EmbedJob", "Executor", "LocalExecutor"]
