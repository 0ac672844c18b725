"""What an index records about a remote embedding server, and whether another engine is the
same model (see :class:`~gguf_embed.remote_engine.RemoteEngine`).

A remote index records ``remote``: the server's kind, model name, address (no key, no query
string), dims, and the vector it gave for :data:`FINGERPRINT_TEXT`.  Another engine is the same
model when its vector for that text is within :data:`MIN_COSINE` of the recorded one (GPU and
CPU builds, batch sizes and quantized KV caches differ in the last digits), with the same dims
and prompts; or, across a local and a remote engine, when the model file's fingerprint is the
same (a ``gguf-embed serve`` reports its file's).  numpy only.
"""

from __future__ import annotations

from typing import Any

import numpy as np

FINGERPRINT_TEXT = ("gguf-embed fingerprint: The quick brown fox jumps over the lazy dog. "
                    "def add(a, b): return a + b  # 42, Köln, 東京")
MIN_COSINE = 0.999


def cosine(a: Any, b: Any) -> float:
    x, y = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    if x.shape != y.shape or not len(x):
        return -1.0
    norm = float(np.linalg.norm(x) * np.linalg.norm(y))
    return float(x @ y) / norm if norm else -1.0


def identity_problem(recorded: dict[str, Any], wanted: dict[str, Any]) -> str | None:
    """Why an index that recorded ``recorded`` refuses an engine whose identity is ``wanted``
    (both from :func:`gguf_embed.index.identity`), as the end of one sentence that starts with
    the index's path; None when they are the same model.  For indexes or engines that are
    remote; two local ones are compared by the index itself."""
    r, w = recorded.get("remote"), wanted.get("remote")
    same_file = recorded.get("model_fingerprint") == wanted.get("model_fingerprint")
    same_dims = recorded.get("dims") == wanted.get("dims")
    if r and not w:
        if same_file and same_dims:
            return None
        return (f"was built through the embedding server at {r.get('url')} ({r.get('kind')}, "
                f"model {r.get('model')!r}); pass --embed-url {r.get('url')} to use it, or "
                f"--reindex to rebuild it with {wanted.get('model_file') or 'a local model'}")
    if w and not r:
        if same_file and same_dims:
            return None
        return (f"was built with the local model {recorded.get('model_file')} "
                f"({recorded.get('dims')} dims); the server at {w.get('url')} serves "
                f"{w.get('model')!r} ({w.get('kind')}), not that model file: leave out "
                f"--embed-url, or pass --reindex to rebuild it through the server")
    if not (r and w):
        return None
    diffs = []
    if recorded.get("dims") != wanted.get("dims") \
            or recorded.get("model_dims") != wanted.get("model_dims"):
        diffs.append(f"{wanted.get('model_dims')} dims (the index has "
                     f"{recorded.get('model_dims')})")
    else:
        score = cosine(r.get("vector") or [], w.get("vector") or [])
        if score < MIN_COSINE:
            diffs.append(f"another vector for the fixed fingerprint text (cosine {score:.4f} "
                         f"< {MIN_COSINE}: another model, or other weights)")
    for key, what in (("query_prompt", "query instruction"),
                      ("document_prompt", "document prompt")):
        if recorded.get(key) != wanted.get(key):
            diffs.append(f"the {what} {wanted.get(key)!r} (the index has "
                         f"{recorded.get(key)!r})")
    if not diffs:
        return None
    return (f"was built through {r.get('url')} ({r.get('kind')}, model {r.get('model')!r}); "
            f"the server at {w.get('url')} ({w.get('kind')}, model {w.get('model')!r}) "
            f"differs: {'; '.join(diffs)}; use the server it was built with, or pass "
            f"--reindex to rebuild it")


__all__ = ["FINGERPRINT_TEXT", "MIN_COSINE", "cosine", "identity_problem"]
