"""What a server serves, held once for its lifetime: the engine, the batcher that joins
concurrent embedding requests into shared decodes, an optional reranker, and one read-only
:class:`~gguf_embed.Index`.

The index is opened on the first search (so a server may start before its index is built) and
kept; it is reopened, with the identity check redone, when the file was replaced or its
recorded model or settings changed (a ``--reindex`` run while serving).  A read-only index
never takes the write lock, so ``gguf-embed index`` runs beside the server and each search
sees its last committed run (WAL).  Searches run one at a time in worker threads, under
:attr:`lock`, which also serializes the engine's decodes outside the batcher.
"""

from __future__ import annotations

import asyncio
import os
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from .batcher import DEFAULT_SHARE, Batcher
from .index import Index
from .protocol import EmbeddingEngine


class EmbeddingService:
    def __init__(self, engine: EmbeddingEngine, *, index_path: str | Path | None = None,
                 reranker: Any | None = None, batch_window: float = 0.004) -> None:
        self.engine = engine
        self.reranker = reranker
        self.index_path = Path(index_path) if index_path else None
        self.batcher = Batcher(engine, window=batch_window) if batch_window > 0 else None
        options = getattr(engine, "options", None)
        self.share_tokens = getattr(options, "batch_tokens", None) or DEFAULT_SHARE
        self.lock = asyncio.Lock()  # one engine decode at a time outside the batcher
        self._index: Index | None = None
        self._stamp: tuple[int, int] | None = None
        self._guard = threading.Lock()  # the index object itself, across worker threads

    async def embed(self, sequences: Sequence[np.ndarray], dimensions: int | None, *,
                    urgent: bool = False) -> np.ndarray:
        """Vectors of prepared sequences (see ``EmbeddingEngine.prepare``), batched with other
        requests when a batcher runs; ``urgent`` (queries) go before document batches.  A large
        request is embedded in pieces that other requests interleave with; cancelling the
        awaiting task (a client that went away) drops the pieces not yet embedded."""
        if self.batcher is not None:
            return await asyncio.wrap_future(self.batcher.submit(list(sequences), dimensions,
                                                                 urgent=urgent))
        parts = []
        for piece in _pieces(list(sequences), self.share_tokens):
            async with self.lock:  # FIFO: another request's piece may go next
                result = await asyncio.to_thread(self.engine.embed_prepared, piece,
                                                 dimensions=dimensions, urgent=urgent)
            parts.append(result.vectors)
        return np.concatenate(parts) if len(parts) > 1 else parts[0]

    async def search(self, query: str, *, rerank: bool = False,
                     **options: Any) -> list[dict[str, Any]]:
        """``Index.search`` on the served index, as the objects of ``search --json``."""
        def run() -> list[dict[str, Any]]:
            with self._guard:
                index = self.index()
                return [r.to_dict() for r in index.search(
                    query, rerank=self.reranker if rerank else None, **options)]

        async with self.lock:
            return await asyncio.to_thread(run)

    def index(self) -> Index:
        """The read-only index, opened (or reopened, when it changed) now."""
        if self.index_path is None:
            raise RuntimeError("no index is served")
        stamp = _stamp(self.index_path)
        if self._index is not None and (stamp != self._stamp or self._index.stale()):
            self._index.close()
            self._index = None
        if self._index is None:
            self._index = Index(self.index_path, self.engine, readonly=True)
            self._stamp = stamp
        return self._index

    def close(self) -> None:
        if self.batcher is not None:
            self.batcher.close()
        with self._guard:
            if self._index is not None:
                self._index.close()
                self._index = None


def _pieces(sequences: list[np.ndarray], share: int) -> list[list[np.ndarray]]:
    """Consecutive runs of about ``share`` tokens (at least one sequence each)."""
    pieces: list[list[np.ndarray]] = []
    tokens = share
    for seq in sequences:
        if tokens + len(seq) > share:
            pieces.append([])
            tokens = 0
        pieces[-1].append(seq)
        tokens += len(seq)
    return pieces


def _stamp(path: Path) -> tuple[int, int] | None:
    try:
        st = os.stat(path)
    except OSError:
        return None
    return (st.st_dev, st.st_ino)
