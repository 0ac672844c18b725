"""A llama.cpp context in embedding mode plus its batch buffer: decode packed sequences, or
one long sequence in chunks, and read the pooled vectors back as numpy."""

from __future__ import annotations

import ctypes
import threading
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager, nullcontext
from typing import Any

import numpy as np

from ._batch import TokenBatch
from ._llama import guarded
from ._llama_binding import lc
from .errors import EngineError, ModelLoadError

POOLING = {"none": 0, "mean": 1, "cls": 2, "last": 3, "rank": 4}
POOLING_NAMES = {v: k for k, v in POOLING.items()}


class DecodeLock:
    """The engine's lock, taken for one decode at a time.  Urgent holders (queries) waiting for
    it are served before non-urgent ones (document batches), except that after an urgent
    decode a waiting batch gets one decode: queries never starve indexing, and a query waits
    for at most the decode in flight (plus other queries' and that one batch decode)."""

    def __init__(self) -> None:
        self._cond = threading.Condition(threading.Lock())
        self._busy = False
        self._urgent_waiting = 0
        self._bulk_waiting = 0
        self._bulk_turn = False  # an urgent decode just ended while a batch was waiting
        self.waiting = 0  # threads waiting for the lock (for tests)

    def _free_for(self, urgent: bool) -> bool:
        if self._busy:
            return False
        if urgent:
            return not self._bulk_turn
        return self._bulk_turn or not self._urgent_waiting

    @contextmanager
    def hold(self, urgent: bool = False) -> Iterator[None]:
        with self._cond:
            self.waiting += 1
            if urgent:
                self._urgent_waiting += 1
            else:
                self._bulk_waiting += 1
            try:
                while not self._free_for(urgent):
                    self._cond.wait()
            finally:
                self.waiting -= 1
                if urgent:
                    self._urgent_waiting -= 1
                else:
                    self._bulk_waiting -= 1
            self._busy = True
            if not urgent:
                self._bulk_turn = False
        try:
            yield
        finally:
            with self._cond:
                self._busy = False
                if urgent and self._bulk_waiting:
                    self._bulk_turn = True
                self._cond.notify_all()


class Context:
    """A llama.cpp context plus its batch buffer."""

    def __init__(self, engine: Any, *, n_ctx: int, n_batch: int, n_ubatch: int, n_seqs: int,
                 unified: bool, flash_attn: bool | None) -> None:
        self.engine = engine
        self.n_batch = n_batch
        params = lc.llama_context_default_params()
        params.n_ctx = n_ctx
        params.n_batch = n_batch
        params.n_ubatch = n_ubatch
        params.n_seq_max = n_seqs
        params.n_threads = params.n_threads_batch = engine.n_threads
        params.embeddings = True
        params.pooling_type = POOLING[engine.pooling]
        params.kv_unified = unified
        params.no_perf = True
        params.flash_attn_type = -1 if flash_attn is None else int(flash_attn)
        self.ctx = None
        try:  # a context cut short (Ctrl-C) is freed
            with guarded():
                self.ctx = lc.llama_init_from_model(engine._model, params)
            if not self.ctx:
                raise ModelLoadError(
                    f"cannot create a llama.cpp context for {engine.path} with {n_ctx} tokens "
                    f"({n_seqs} sequences): out of memory? lower the context or batch size")
            self.n_ctx = int(lc.llama_n_ctx(self.ctx))
            self.batch = TokenBatch(n_batch)
            self._mem = lc.llama_get_memory(self.ctx)
            self._threads = engine.n_threads
        except BaseException:
            self.free()
            raise

    def _run(self) -> None:
        with guarded():
            rc = lc.llama_decode(self.ctx, self.batch.as_llama())
        if rc != 0:
            self.clear()
            raise EngineError(f"llama_decode failed with code {rc} ({self.batch.n_tokens} "
                              f"tokens); try a smaller batch size")

    def _pooled(self, seq_id: int) -> np.ndarray:
        ptr = lc.llama_get_embeddings_seq(self.ctx, seq_id)
        if not ptr:
            raise EngineError(f"llama.cpp returned no embedding for sequence {seq_id}")
        return np.ctypeslib.as_array(
            ctypes.cast(ptr, ctypes.POINTER(ctypes.c_float)), shape=(self.engine.n_embd,)
        ).copy()

    def clear(self) -> None:
        if self._mem:
            lc.llama_memory_clear(self._mem, True)

    def decode(self, seqs: list[np.ndarray], threads: int | None = None) -> np.ndarray:
        """Pooled vectors of ``seqs`` in one decode, on ``threads`` (default: the engine's)."""
        threads = threads or self.engine.n_threads
        if threads != self._threads:
            lc.llama_set_n_threads(self.ctx, threads, threads)
            self._threads = threads
        self.batch.clear()
        for s, tokens in enumerate(seqs):
            self.batch.add(tokens, s)
        try:
            self._run()
            return np.stack([self._pooled(s) for s in range(len(seqs))])
        finally:
            self.clear()

    def decode_chunked(self, tokens: np.ndarray,
                       hold: Callable[[], AbstractContextManager[Any]] = nullcontext
                       ) -> np.ndarray:
        """One long sequence, chunk by chunk; ``hold()`` is entered around each decode (the
        engine's lock, so that other work may run between chunks)."""
        last = (len(tokens) - 1) // self.n_batch * self.n_batch
        try:
            for start in range(0, len(tokens), self.n_batch):
                with hold():
                    self.batch.clear()
                    self.batch.add(tokens[start:start + self.n_batch], 0, start)
                    self._run()
                    if start == last:
                        return self._pooled(0)
            raise EngineError("no tokens to decode")
        finally:
            with hold():
                self.clear()

    def free(self) -> None:
        if self.ctx:
            with guarded():
                lc.llama_free(self.ctx)
                self.ctx = None

