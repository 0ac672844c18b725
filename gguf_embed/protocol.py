"""The contract between an embedding engine and everything that uses one.

:class:`~gguf_embed.Engine` (llama.cpp) and :class:`~gguf_embed.testing.FakeEngine` both
satisfy :class:`EmbeddingEngine`; ``Index``, the indexer, the batcher and the server are
written against it and nothing else.  Inputs go in two steps where a caller needs them apart
(the server checks a request before it joins a shared batch): :meth:`~EmbeddingEngine.prepare`
turns texts or token-id arrays into checked token sequences, and
:meth:`~EmbeddingEngine.embed_prepared` embeds them.  :meth:`~EmbeddingEngine.encode` is both
at once.  numpy only: importing this module loads no model runtime.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from .models import ModelSpec

Input = str | Sequence[int] | np.ndarray  # a text, or the token ids of one input


@dataclass
class Embeddings:
    """Vectors in input order with what it took to make them."""

    vectors: np.ndarray  # (n, dims) float32, C-contiguous, L2-normalized
    token_counts: list[int] = field(default_factory=list)
    truncated: list[int] = field(default_factory=list)  # indices of inputs cut to the context

    @property
    def total_tokens(self) -> int:
        return sum(self.token_counts)


@dataclass
class Prepared:
    """Token sequences ready to embed: prompt applied, EOS appended where the model needs it,
    ids in the vocabulary, each within the context (or cut to it, listed in ``truncated``)."""

    sequences: list[np.ndarray]
    truncated: list[int] = field(default_factory=list)

    @property
    def total_tokens(self) -> int:
        return sum(len(s) for s in self.sequences)

    def __len__(self) -> int:
        return len(self.sequences)


class EmbeddingEngine(Protocol):
    """What an embedding engine offers the rest of gguf-embed."""

    @property
    def path(self) -> Path:
        """The model file."""

    @property
    def spec(self) -> ModelSpec:
        """The model's catalog entry (prompts, pooling, EOS), completed from the file."""

    @property
    def fingerprint(self) -> str:
        """Identifies the model file's content; an index records it and refuses another."""

    @property
    def dims(self) -> int:
        """The size of the vectors before any Matryoshka cut."""

    @property
    def max_tokens(self) -> int:
        """The context: the most tokens one input may have."""

    @property
    def pooling(self) -> str:
        """How token vectors become one vector: ``mean``, ``cls`` or ``last``."""

    def tokenize(self, text: str) -> np.ndarray:
        """The token ids the model sees for ``text`` (specials and EOS included)."""

    def count_tokens(self, texts: Sequence[str]) -> list[int]:
        """``len(tokenize(t))`` for each text."""

    def check_dimensions(self, dimensions: int | None) -> None:
        """Raise :class:`~gguf_embed.errors.InvalidDimensions` unless ``dimensions`` is None
        or within the model's Matryoshka range."""

    def prepare(self, inputs: Sequence[Input], *, query: bool = False, task: str | None = None,
                truncate: bool = False) -> Prepared:
        """Texts (with the query or document prompt) or token-id arrays → checked sequences;
        raises :class:`~gguf_embed.errors.InputError` (or ``InputTooLong``) naming the input."""

    def embed_prepared(self, prepared: Prepared | Sequence[np.ndarray], *,
                       dimensions: int | None = None, urgent: bool = False) -> Embeddings:
        """Embed sequences from :meth:`prepare` (several requests' may be joined).  ``urgent``
        work (queries) goes before waiting document batches where the engine is shared."""

    def encode(self, texts: Sequence[str], *, query: bool = False, task: str | None = None,
               dimensions: int | None = None, truncate: bool = False) -> Embeddings:
        """``embed_prepared(prepare(texts, ...), dimensions=...)`` for texts."""

    def embed(self, texts: Sequence[str] | str, *, query: bool = False, task: str | None = None,
              dimensions: int | None = None, truncate: bool = False) -> np.ndarray:
        """Just the vectors of :meth:`encode`."""

    def info(self) -> dict[str, Any]:
        """What is loaded, for ``/health`` and ``gguf-embed doctor``."""


__all__ = ["EmbeddingEngine", "Embeddings", "Input", "Prepared"]


class EmbedShortcut:
    """``embed(texts)``: :meth:`encode`'s vectors for one text or many, shared by the engines
    (``Engine``, ``RemoteEngine``, ``FakeEngine``), which define ``encode``."""

    def encode(self, texts: Sequence[str], *, query: bool = False, task: str | None = None,
               dimensions: int | None = None, truncate: bool = False) -> Embeddings:
        raise NotImplementedError

    def embed(self, texts: Sequence[str] | str, *, query: bool = False, task: str | None = None,
              dimensions: int | None = None, truncate: bool = False) -> np.ndarray:
        """Embed texts (documents by default; ``query=True`` adds the query instruction)."""
        if isinstance(texts, str):
            texts = [texts]
        return self.encode(texts, query=query, task=task, dimensions=dimensions,
                           truncate=truncate).vectors
