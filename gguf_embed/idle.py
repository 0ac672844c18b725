"""An engine that frees its model when idle and loads it again on the next call.

For long-running surfaces (``serve --unload-after``, and the same way an MCP server, a file
watcher or a desktop app): the model's memory is given back after ``unload_after`` seconds
without a call, and the next call pays one model load (measured in BENCHMARKS.md).

    engine = IdleEngine(resolve_model("qwen3-embedding-0.6b"), unload_after=300)
    engine.embed(["..."])          # loads the model
    ...                            # 300 s without a call: the model is freed
    engine.embed(["..."])          # loads it again

It has the surface of :class:`~gguf_embed.Engine` that the index, search and server use; what
describes the model (dims, context, spec, pooling) is remembered from the first load, so
answering those never loads it again.  Thread-safe like the engine; :meth:`close` frees the
model for good.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from .engine import Engine
from .errors import EngineError
from .models import ResolvedModel
from .protocol import Embeddings, Input, Prepared

# What describes the model, copied from the first load (never changes between loads).
_REMEMBERED = ("path", "options", "n_threads", "n_gpu_layers", "metadata", "arch", "n_vocab",
               "n_embd", "n_ctx_train", "causal", "spec", "pooling", "max_tokens", "chunked",
               "dims", "matryoshka_range", "side_threads")


class IdleEngine:
    """An :class:`Engine` made on first use and closed after ``unload_after`` idle seconds."""

    def __init__(self, model: str | Path | ResolvedModel, *, unload_after: float,
                 factory: Callable[..., Engine] = Engine, **engine_kwargs: Any) -> None:
        if unload_after <= 0:
            raise ValueError("unload_after must be a positive number of seconds")
        self.unload_after = unload_after
        self.loads = 0  # how many times the model was loaded (for tests and benchmarks)
        self.last_load_seconds = 0.0
        self._make = lambda: factory(model, **engine_kwargs)
        self._engine: Engine | None = None
        self._cond = threading.Condition()
        self._active = 0
        self._last_used = time.monotonic()
        self._closed = False
        self._timer = threading.Thread(target=self._watch, name="gguf-embed-idle-unload",
                                       daemon=True)
        engine = self._acquire()  # load once now: a bad file fails here, not on a request
        try:
            self.fingerprint = engine.fingerprint
            for name in _REMEMBERED:
                setattr(self, name, getattr(engine, name))
        finally:
            self._release()
        self._timer.start()

    # ------------------------------------------------------------------ state
    @property
    def loaded(self) -> bool:
        return self._engine is not None

    @property
    def closed(self) -> bool:
        return self._closed

    def unload(self) -> None:
        """Free the model now (waiting for calls in progress); the next call loads it again."""
        with self._cond:
            while self._active:
                self._cond.wait()
            engine, self._engine = self._engine, None
        if engine is not None:
            engine.close()

    def close(self) -> None:
        """Free the model for good; later calls raise :class:`EngineError`."""
        with self._cond:
            self._closed = True
            self._cond.notify_all()
        self.unload()
        if self._timer.is_alive() and self._timer is not threading.current_thread():
            self._timer.join(timeout=5)

    def __enter__(self) -> IdleEngine:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ------------------------------------------------------------------ the engine's surface
    def tokenize(self, text: str) -> np.ndarray:
        return self._call(lambda e: e.tokenize(text))

    def count_tokens(self, texts: Sequence[str]) -> list[int]:
        return self._call(lambda e: e.count_tokens(texts))

    def check_dimensions(self, dimensions: int | None) -> None:
        self._call(lambda e: e.check_dimensions(dimensions))

    def prepare(self, inputs: Sequence[Input], **kwargs: Any) -> Prepared:
        return self._call(lambda e: e.prepare(inputs, **kwargs))

    def embed_prepared(self, prepared: Prepared | Sequence[np.ndarray],
                       **kwargs: Any) -> Embeddings:
        return self._call(lambda e: e.embed_prepared(prepared, **kwargs))

    def embed_side(self, prepared: Prepared | Sequence[np.ndarray],
                   **kwargs: Any) -> Embeddings:
        return self._call(lambda e: e.embed_side(prepared, **kwargs))

    def embed(self, texts: Sequence[str] | str, **kwargs: Any) -> np.ndarray:
        return self._call(lambda e: e.embed(texts, **kwargs))

    def encode(self, texts: Sequence[str], **kwargs: Any) -> Embeddings:
        return self._call(lambda e: e.encode(texts, **kwargs))

    def info(self) -> dict[str, Any]:
        return {**self._call(lambda e: e.info()), "unload_after": self.unload_after}

    # ------------------------------------------------------------------ internals
    def _call(self, work: Callable[[Engine], Any]) -> Any:
        engine = self._acquire()
        try:
            return work(engine)
        finally:
            self._release()

    def _acquire(self) -> Engine:
        with self._cond:
            if self._closed:
                raise EngineError("the engine is closed; create a new one")
            self._active += 1
            try:
                if self._engine is None:  # loads under the condition: one load at a time
                    start = time.perf_counter()
                    self._engine = self._make()
                    self.last_load_seconds = time.perf_counter() - start
                    self.loads += 1
            except BaseException:
                self._active -= 1
                raise
            return self._engine

    def _release(self) -> None:
        with self._cond:
            self._active -= 1
            self._last_used = time.monotonic()
            self._cond.notify_all()

    def _watch(self) -> None:
        """Until closed: unload once nothing has used the model for ``unload_after`` seconds."""
        with self._cond:
            while not self._closed:
                if self._engine is None or self._active:
                    self._cond.wait()  # woken by a call ending, or close()
                    continue
                idle = time.monotonic() - self._last_used
                if idle < self.unload_after:
                    self._cond.wait(timeout=self.unload_after - idle)
                    continue
                # nothing uses it, and no call can start meanwhile; ``loaded`` turns false
                # only once the memory is given back
                self._engine.close()
                self._engine = None
