"""A deterministic stand-in for :class:`~gguf_embed.Engine`, shipped for fast tests of indexing
and search logic (like httpx's test transport).  Vectors are hashed bags of words: texts that
share words are close, so rankings are meaningful and reproducible."""

from __future__ import annotations

import hashlib
import re
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from ._context import finish
from .engine import Embeddings
from .errors import InputError, InputTooLong
from .models import ModelSpec

WORD = re.compile(r"\w+|[^\w\s]")


class FakeEngine:
    """Same surface as Engine for what Index uses: tokenize, encode, embed, dims, spec."""

    pooling = "mean"

    def __init__(self, dims: int = 64, max_tokens: int = 512, name: str = "fake") -> None:
        self.dims = self.n_embd = dims
        self.max_tokens = max_tokens
        self.path = Path(f"{name}.gguf")
        self.fingerprint = f"{name}-{dims}"
        self.spec = ModelSpec(name=name, repo=None, file=self.path.name, dims=dims,
                              pooling="mean", query_prompt="query: {text}")
        self.calls: list[int] = []  # texts per encode call, to count embedding work

    def tokenize(self, text: str) -> np.ndarray:
        words = WORD.findall(text.lower())
        ids = [int.from_bytes(hashlib.blake2b(w.encode(), digest_size=4).digest(), "little")
               % 50_000 for w in words]
        return np.array([1, *ids, 2], dtype=np.int32)

    def count_tokens(self, texts: Sequence[str]) -> list[int]:
        return [len(self.tokenize(t)) for t in texts]

    def encode(self, texts: Sequence[str], *, query: bool = False, task: str | None = None,
               dimensions: int | None = None, truncate: bool = False) -> Embeddings:
        self.calls.append(len(texts))
        rows, counts, cut = [], [], []
        for i, text in enumerate(texts):
            if not text:
                raise InputError(f"input {i} is empty", param="input")
            tokens = self.tokenize(text)
            if len(tokens) > self.max_tokens:
                if not truncate:
                    raise InputTooLong(f"input {i} has {len(tokens)} tokens",
                                       index=i, n_tokens=len(tokens), limit=self.max_tokens)
                tokens, _ = tokens[: self.max_tokens], cut.append(i)
            vec = np.zeros(self.dims, dtype=np.float32)
            for t in tokens[1:-1]:
                vec[t % self.dims] += 1.0 if (t >> 8) % 2 else -1.0
            vec[0] += 0.01
            rows.append(vec)
            counts.append(len(tokens))
        return Embeddings(finish(np.stack(rows), dimensions), counts, cut)

    def embed(self, texts: Sequence[str] | str, **kwargs: object) -> np.ndarray:
        if isinstance(texts, str):
            texts = [texts]
        return self.encode(texts, **kwargs).vectors  # type: ignore[arg-type]

    def info(self) -> dict[str, object]:
        return {"name": self.spec.name, "dims": self.dims, "context": self.max_tokens}
