"""Vectors as numpy and as SQLite blobs: the Matryoshka cut with normalization, and the
little-endian float32 and sign-bit encodings the index stores.  numpy only (no llama.cpp), so
that :mod:`gguf_embed.testing` and the store can use them without loading a model runtime."""

from __future__ import annotations

import numpy as np


def finish(raw: np.ndarray, dimensions: int | None = None) -> np.ndarray:
    """Matryoshka cut (if asked), then L2 normalization; float32, C-contiguous."""
    vectors = raw[:, :dimensions] if dimensions else raw
    norms = np.linalg.norm(vectors, axis=1, keepdims=True)
    norms[norms == 0] = 1.0
    return np.ascontiguousarray(vectors / norms, dtype=np.float32)


def vec_blob(vector: np.ndarray) -> bytes:
    """A vector as sqlite-vec wants it: little-endian float32."""
    return np.ascontiguousarray(vector, dtype="<f4").tobytes()


def bit_blob(vector: np.ndarray | bytes) -> bytes:
    """The signs of a vector packed as bits (zero-padded to whole bytes) for the coarse pass."""
    if isinstance(vector, bytes):
        vector = np.frombuffer(vector, dtype="<f4")
    return np.packbits(np.asarray(vector) > 0, bitorder="little").tobytes()
