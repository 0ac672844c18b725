"""A ``llama_batch`` whose arrays are numpy buffers, filled with vector writes, never per token."""

from __future__ import annotations

import ctypes

import numpy as np

from ._llama_binding import lc


class TokenBatch:
    """Up to ``capacity`` tokens, each in exactly one sequence, every token an output."""

    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self.token = np.zeros(capacity, dtype=np.int32)
        self.pos = np.zeros(capacity, dtype=np.int32)
        self.n_seq_id = np.ones(capacity, dtype=np.int32)
        self.seq = np.zeros(capacity, dtype=np.int32)
        self.logits = np.ones(capacity, dtype=np.int8)
        seq_ptr = ctypes.POINTER(lc.llama_seq_id)
        base = self.seq.ctypes.data
        step = self.seq.itemsize
        self._seq_ptrs = (seq_ptr * capacity)(
            *(ctypes.cast(base + k * step, seq_ptr) for k in range(capacity))
        )
        self.struct = lc.llama_batch()
        self.struct.token = self.token.ctypes.data_as(ctypes.POINTER(lc.llama_token))  # type: ignore[assignment]
        self.struct.embd = ctypes.POINTER(ctypes.c_float)()  # type: ignore[assignment]
        self.struct.pos = self.pos.ctypes.data_as(ctypes.POINTER(lc.llama_pos))  # type: ignore[assignment]
        self.struct.n_seq_id = self.n_seq_id.ctypes.data_as(ctypes.POINTER(ctypes.c_int32))  # type: ignore[assignment]
        self.struct.seq_id = ctypes.cast(self._seq_ptrs, ctypes.POINTER(seq_ptr))  # type: ignore[assignment]
        self.struct.logits = self.logits.ctypes.data_as(ctypes.POINTER(ctypes.c_int8))  # type: ignore[assignment]
        self.n_tokens = 0

    def clear(self) -> None:
        self.n_tokens = 0

    def add(self, tokens: np.ndarray, seq_id: int, start_pos: int = 0) -> None:
        n = len(tokens)
        at = self.n_tokens
        if at + n > self.capacity:
            raise ValueError(f"batch overflow: {at + n} > {self.capacity}")
        self.token[at:at + n] = tokens
        self.pos[at:at + n] = np.arange(start_pos, start_pos + n, dtype=np.int32)
        self.seq[at:at + n] = seq_id
        self.n_tokens = at + n

    def as_llama(self) -> lc.llama_batch:
        self.struct.n_tokens = self.n_tokens
        return self.struct
