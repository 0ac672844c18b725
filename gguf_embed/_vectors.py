"""Vectors as numpy and as SQLite blobs: the Matryoshka cut with normalization, and the
little-endian float32 and sign-bit encodings the index stores.  numpy only (no llama.cpp), so
that :mod:`gguf_embed.testing` and the store can use them without loading a model runtime."""

from __future__ import annotations

import numpy as np

from .errors import NonFiniteVector


def finish(raw: np.ndarray, dimensions: int | None = None) -> np.ndarray:
    """Matryoshka cut (if asked), then L2 normalization; float32, C-contiguous.  A row with
    NaN or Inf (or one that overflows on normalizing) raises :class:`NonFiniteVector` naming
    the inputs: such a vector is never handed on to be stored or compared."""
    vectors = raw[:, :dimensions] if dimensions else raw
    with np.errstate(over="ignore", invalid="ignore"):
        norms = np.linalg.norm(vectors, axis=1, keepdims=True)
        norms[norms == 0] = 1.0
        out = np.ascontiguousarray(vectors / norms, dtype=np.float32)
    check_finite(out)
    return out


def check_finite(vectors: np.ndarray) -> None:
    """Raise :class:`NonFiniteVector` naming the rows of ``vectors`` with NaN or Inf."""
    if vectors.size and not np.isfinite(vectors).all():
        bad = [int(i) for i in np.flatnonzero(~np.isfinite(vectors).all(axis=1))]
        more = f" (and {len(bad) - 1} more)" if len(bad) > 1 else ""
        raise NonFiniteVector(
            f"input {bad[0]}{more} gave a non-finite vector (NaN or Inf): the model or its "
            f"build cannot embed it; it was not used", indices=bad, vectors=vectors)


def is_finite_blob(blob: bytes) -> bool:
    """Whether a stored little-endian float32 vector holds only finite values."""
    return bool(np.isfinite(np.frombuffer(blob, dtype="<f4")).all())


def vec_blob(vector: np.ndarray) -> bytes:
    """A vector as sqlite-vec wants it: little-endian float32."""
    return np.ascontiguousarray(vector, dtype="<f4").tobytes()


def bit_blob(vector: np.ndarray | bytes) -> bytes:
    """The signs of a vector packed as bits (zero-padded to whole bytes) for the coarse pass."""
    if isinstance(vector, bytes):
        vector = np.frombuffer(vector, dtype="<f4")
    return np.packbits(np.asarray(vector) > 0, bitorder="little").tobytes()
