"""A deterministic stand-in for :class:`~gguf_embed.Engine`, shipped for fast tests of indexing
and search logic (like httpx's test transport).  Vectors are hashed bags of words: texts that
share words are close, so rankings are meaningful and reproducible."""

from __future__ import annotations

import hashlib
import re
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from ._vectors import finish
from .errors import InputError, InputTooLong, InvalidDimensions
from .models import ModelSpec
from .protocol import EmbeddingEngine, Embeddings, EmbedShortcut, Input, Prepared

WORD = re.compile(r"\w+|[^\w\s]")


class FakeEngine(EmbedShortcut):
    """An :class:`~gguf_embed.protocol.EmbeddingEngine` without a model: hashed words."""

    pooling = "mean"
    n_vocab = 50_000

    def __init__(self, dims: int = 64, max_tokens: int = 512, name: str = "fake") -> None:
        self.dims = self.n_embd = dims
        self.max_tokens = max_tokens
        self.path = Path(f"{name}.gguf")
        self.fingerprint = f"{name}-{dims}"
        self.spec = ModelSpec(name=name, repo=None, file=self.path.name, dims=dims,
                              pooling="mean", query_prompt="query: {text}")
        self.calls: list[int] = []  # texts per encode call, to count embedding work
        self.urgent_calls: list[bool] = []  # the urgent flag of each call, in order

    def tokenize(self, text: str) -> np.ndarray:
        words = WORD.findall(text.lower())
        ids = [int.from_bytes(hashlib.blake2b(w.encode(), digest_size=4).digest(), "little")
               % self.n_vocab for w in words]
        return np.array([1, *ids, 2], dtype=np.int32)

    def count_tokens(self, texts: Sequence[str]) -> list[int]:
        return [len(self.tokenize(t)) for t in texts]

    def check_dimensions(self, dimensions: int | None) -> None:
        if dimensions is not None and not 1 <= dimensions <= self.dims:
            raise InvalidDimensions(f"dimensions must be an integer from 1 to {self.dims}, "
                                    f"got {dimensions!r}")

    def prepare(self, inputs: Sequence[Input], *, query: bool = False, task: str | None = None,
                truncate: bool = False) -> Prepared:
        seqs, cut = [], []
        for i, item in enumerate(inputs):
            if isinstance(item, str):
                if not item:
                    raise InputError(f"input {i} is empty", param="input")
                tokens = self.tokenize(item)  # no prompt: queries and documents alike
            else:
                tokens = np.asarray(item, dtype=np.int32)
                if len(tokens) == 0:
                    raise InputError(f"input {i} has no tokens", param="input")
            if len(tokens) > self.max_tokens:
                if not truncate:
                    raise InputTooLong(f"input {i} has {len(tokens)} tokens",
                                       index=i, n_tokens=len(tokens), limit=self.max_tokens)
                tokens = tokens[: self.max_tokens]
                cut.append(i)
            seqs.append(tokens)
        return Prepared(seqs, cut)

    def embed_prepared(self, prepared: Prepared | Sequence[np.ndarray], *,
                       dimensions: int | None = None, urgent: bool = False) -> Embeddings:
        self.check_dimensions(dimensions)
        seqs = prepared.sequences if isinstance(prepared, Prepared) else list(prepared)
        self.calls.append(len(seqs))
        self.urgent_calls.append(urgent)
        rows = []
        for tokens in seqs:
            vec = np.zeros(self.dims, dtype=np.float32)
            for t in tokens[1:-1]:
                vec[t % self.dims] += 1.0 if (t >> 8) % 2 else -1.0
            vec[0] += 0.01
            rows.append(vec)
        cut = prepared.truncated if isinstance(prepared, Prepared) else []
        return Embeddings(finish(np.stack(rows), dimensions), [len(s) for s in seqs], list(cut))

    def encode(self, texts: Sequence[str], *, query: bool = False, task: str | None = None,
               dimensions: int | None = None, truncate: bool = False) -> Embeddings:
        return self.embed_prepared(self.prepare(texts, query=query, task=task,
                                                truncate=truncate), dimensions=dimensions)


    def info(self) -> dict[str, object]:
        return {"name": self.spec.name, "dims": self.dims, "context": self.max_tokens}


if TYPE_CHECKING:  # mypy checks that FakeEngine keeps the contract
    def _is_an_embedding_engine(engine: FakeEngine) -> EmbeddingEngine:
        return engine
