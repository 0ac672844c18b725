"""The embedding engine: a GGUF model in llama.cpp's embedding mode, numpy in and out.

Correctness: the model's own pooling, EOS appended as a token id when the model needs it
(Qwen3-Embedding: ``<|endoftext|>``), query/document prompts from the catalog, Matryoshka cut
then L2 normalization, and a typed error (never a silent cut) for inputs longer than the context.

Speed: inputs sorted by length and packed into as few ``llama_decode`` calls as fit, with flash
attention so that a packed batch does not pay attention across its sequences; long inputs of
causal last-token models are decoded alone, in ``batch_tokens`` chunks (BENCHMARKS.md).  How
decodes are scheduled (the main, side and long lanes) is in :mod:`gguf_embed._lanes`.
"""

from __future__ import annotations

import contextlib
import functools
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from . import _llama
from ._context import POOLING_NAMES
from ._lanes import LONG_FLASH_ATTN_CPU_MAX as LONG_FLASH_ATTN_CPU_MAX  # re-exported
from ._lanes import EngineOptions as EngineOptions  # re-exported: the public name's home
from ._lanes import Lanes
from ._llama_binding import lc
from ._text import check_text
from ._vectors import finish
from .errors import (
    EngineError,
    InputError,
    InputTooLong,
    InvalidDimensions,
    ModelLoadError,
)
from .gguf_header import check_gguf
from .models import (
    QWEN3_QUERY,
    QWEN3_TASK,
    ModelSpec,
    ResolvedModel,
    file_fingerprint,
    spec_for_file,
)
from .protocol import EmbeddingEngine, Embeddings, EmbedShortcut, Input, Prepared

NON_CAUSAL_ARCHS = {"bert", "nomic-bert", "nomic-bert-moe", "jina-bert-v2", "jina-bert-v3",
                    "modern-bert", "neo-bert", "gemma-embedding", "t5encoder"}
ALL_LAYERS = 0x7FFFFFFF


class Engine(Lanes, EmbedShortcut):
    """One GGUF embedding model loaded in llama.cpp.

    Threads: one engine may be shared by every thread of a process (make one per process: a
    second copy of the model only costs memory).  Calls take the engine's lock for one
    ``llama_decode`` at a time, and queries (``query=True``) waiting for it go before document
    batches, so a search made while an index run embeds waits for one decode, not a batch.
    :meth:`close` frees the model; a closed engine raises :class:`EngineError`.
    """

    allow_rank = False  # a reranker GGUF is refused (reranker.Reranker loads those)

    def __init__(
        self,
        model: str | Path | ResolvedModel,
        *,
        spec: ModelSpec | None = None,
        n_ctx: int | None = None,
        n_threads: int | None = None,
        n_gpu_layers: int | None = None,
        options: EngineOptions | None = None,
        vocab_only: bool = False,
    ) -> None:
        if isinstance(model, ResolvedModel):
            path, spec = model.path, spec or model.spec
        else:
            path = Path(model)
        self.path = path
        self.options = options or EngineOptions()
        self.n_threads = n_threads or _llama.physical_cores()
        self._start_lanes()
        self._closed = False
        self._model: Any = None
        # vocab_only: the tokenizer and the header, no weights (a Ray head node chunks text
        # for actors that embed it); it tokenizes and counts, and refuses to embed
        self.vocab_only = vocab_only
        _check_gguf_file(path)
        _llama.backend()
        params = lc.llama_model_default_params()
        params.vocab_only = vocab_only
        # off where AMX kernels meet an AMX CPU: they segfault on quantized models (#20824)
        params.use_extra_bufts = _llama.use_extra_bufts()[0]
        if vocab_only:
            n_gpu_layers = 0
        elif n_gpu_layers is None:
            n_gpu_layers = ALL_LAYERS if _llama.supports_gpu_offload() else 0
        params.n_gpu_layers = n_gpu_layers
        params.progress_callback = _llama.load_progress  # a Ctrl-C stops the load
        self.n_gpu_layers = n_gpu_layers
        try:  # a load cut short (Ctrl-C, a bad header) frees what it got
            with _llama.guarded():
                self._model = lc.llama_model_load_from_file(str(path).encode("utf-8"), params)
            if not self._model:
                raise ModelLoadError(
                    f"llama.cpp cannot load {path}: the file is corrupt or truncated, or its "
                    f"architecture is unknown to this llama.cpp build; re-download it or run with "
                    f"--verbose to see llama.cpp's reason"
                )
            self.metadata = _llama.model_metadata(self._model)
            self.arch = self.metadata.get("general.architecture", "")
            if not self.allow_rank and (_llama.is_rank_model(self._model, self.metadata, self.arch)
                                        or (spec or spec_for_file(path)).kind == "reranker"):
                self.close()
                raise ModelLoadError(
                    f"{path} is a reranker, not an embedding model: give it to --rerank "
                    f"(gguf_embed.Reranker), and an embedding model such as "
                    f"qwen3-embedding-0.6b to --model")
            self._vocab = lc.llama_model_get_vocab(self._model)
            self.n_vocab = int(lc.llama_vocab_n_tokens(self._vocab))
            # a vocab_only load has no hyperparameters: the header's keys say the same
            self.n_embd = int(lc.llama_model_n_embd_out(self._model) or lc.llama_model_n_embd(
                self._model) or self._header_int("embedding_length_out", "embedding_length"))
            self.n_ctx_train = int(lc.llama_model_n_ctx_train(self._model)
                                   or self._header_int("context_length"))
            causal_key = self.metadata.get(f"{self.arch}.attention.causal")
            self.causal = (causal_key == "true") if causal_key is not None else (
                self.arch not in NON_CAUSAL_ARCHS)
            self.spec = _fit_spec(spec or spec_for_file(path), self)
            self.pooling = self.spec.pooling or "mean"
            limit = n_ctx or self.spec.n_ctx or self.n_ctx_train
            self.max_tokens = min(limit, self.n_ctx_train) if self.n_ctx_train > 0 else limit
            self._eos_id = self._find_eos() if self.spec.eos else None
            self._adds_tail = bool(self._eos_id is not None
                                   or lc.llama_vocab_get_add_eos(self._vocab)
                                   or lc.llama_vocab_get_add_sep(self._vocab))
            # Causal last-token models keep state across decodes, so a long input can be fed in
            # chunks; any other model must see a whole input in one physical batch.
            self.chunked = self.causal and self.pooling == "last"
        except BaseException:
            self.close()
            raise

    # ---------------------------------------------------------------- public API
    @property
    def dims(self) -> int:
        return self.n_embd

    @functools.cached_property
    def fingerprint(self) -> str:
        """Identifies the model file's content (see :func:`~gguf_embed.models.file_fingerprint`);
        an index records it and refuses another model."""
        return file_fingerprint(self.path)

    @property
    def matryoshka_range(self) -> tuple[int, int]:
        return (self.spec.matryoshka_min or 1, self.n_embd)

    def info(self) -> dict[str, Any]:
        self._check_open()
        return {
            "path": str(self.path), "name": self.spec.name, "architecture": self.arch,
            "dims": self.n_embd, "pooling": self.pooling, "causal": self.causal,
            "eos": self.spec.eos, "context": self.max_tokens, "context_train": self.n_ctx_train,
            "threads": self.n_threads, "gpu_layers": self.n_gpu_layers,
            "gpu_offload": _llama.supports_gpu_offload(),
            "flash_attn": self.options.flash_attn,
            "long_flash_attn": "auto" if self.options.long_flash_attn is None
            else self.options.long_flash_attn,
            "matryoshka": list(self.matryoshka_range),
            "query_prompt": self.spec.query_prompt, "document_prompt": self.spec.document_prompt,
            "size": int(lc.llama_model_size(self._model)),
            "parameters": int(lc.llama_model_n_params(self._model)),
        }

    def tokenize(self, text: str) -> np.ndarray:
        """The token ids the model sees for ``text`` (specials and EOS included)."""
        self._check_open()
        try:
            data = text.encode("utf-8")
        except UnicodeEncodeError:
            check_text(text, "the input", "input")
            raise
        capacity = len(data) + 8
        buf = (lc.llama_token * capacity)()
        n = lc.llama_tokenize(self._vocab, data, len(data), buf, capacity, True, False)
        if n < 0:
            capacity = -n
            buf = (lc.llama_token * capacity)()
            n = lc.llama_tokenize(self._vocab, data, len(data), buf, capacity, True, False)
        tokens = np.frombuffer(buf, dtype=np.int32, count=n).copy()  # type: ignore[call-overload]
        return self._with_eos(tokens)

    def count_tokens(self, texts: Sequence[str]) -> list[int]:
        return [len(self.tokenize(t)) for t in texts]


    def encode(self, texts: Sequence[str], *, query: bool = False, task: str | None = None,
               dimensions: int | None = None, truncate: bool = False) -> Embeddings:
        """Like :meth:`embed`, with token counts and which inputs were truncated."""
        for i, text in enumerate(texts):
            if not isinstance(text, str):
                raise InputError(f"input {i} is not a string", param="input")
            if not text:
                raise InputError(f"input {i} is empty; pass non-empty text", param="input")
        self.check_dimensions(dimensions)
        return self.embed_prepared(self.prepare(texts, query=query, task=task,
                                                truncate=truncate), dimensions=dimensions,
                                   urgent=query)

    def prepare(self, inputs: Sequence[Input], *, query: bool = False, task: str | None = None,
                truncate: bool = False) -> Prepared:
        """Texts or token-id arrays (as OpenAI's) → token sequences ready to embed: a text gets
        the model's query (``query=True``, with ``task``) or document prompt; every input gets
        EOS where the model needs it and is checked (non-empty, ids in the vocabulary, within
        the context, or cut to it with ``truncate=True``) before anything is decoded."""
        seqs: list[np.ndarray] = []
        truncated: list[int] = []
        for i, item in enumerate(inputs):
            ids: Sequence[int] | np.ndarray
            if isinstance(item, str):
                if not item:
                    raise InputError(f"input {i} is empty; pass non-empty text", param="input")
                ids = self.tokenize(self.spec.format_query(item, task) if query
                                    else self.spec.format_document(item))
            else:
                ids = item  # token ids: checked next, before any cast
            tokens, cut = self._check_tokens(ids, i, truncate=truncate)
            seqs.append(tokens)
            if cut:
                truncated.append(i)
        return Prepared(seqs, truncated)

    def embed_prepared(self, prepared: Prepared | Sequence[np.ndarray], *,
                       dimensions: int | None = None, urgent: bool = False,
                       threads: int | None = None) -> Embeddings:
        """Embed the sequences of :meth:`prepare` (those of several calls may be joined into
        one list: they are packed into shared decodes).  ``urgent`` work (queries) takes the
        engine before waiting non-urgent work (document batches).  ``threads``: fewer than
        the engine's, for these decodes (a server leaves the rest to :meth:`embed_side`)."""
        return self._embed(prepared, dimensions, urgent, threads, side=False)

    def _embed(self, prepared: Prepared | Sequence[np.ndarray], dimensions: int | None,
               urgent: bool, threads: int | None, *, side: bool) -> Embeddings:
        self._check_open()
        if self.vocab_only:
            raise EngineError(f"the engine for {self.path.name} was loaded vocab_only: it "
                              f"tokenizes but cannot embed; load it without vocab_only")
        self.check_dimensions(dimensions)
        if isinstance(prepared, Prepared):
            seqs, truncated = prepared.sequences, prepared.truncated
        else:
            seqs, truncated = list(prepared), []
        for i, seq in enumerate(seqs):  # cheap, and llama.cpp must never see a bad id
            self._check_tokens(seq, i)
        raw = self._embed_sequences(seqs, urgent, threads, side)  # a lock per decode
        return Embeddings(finish(raw, dimensions), [len(s) for s in seqs], list(truncated))

    def _check_tokens(self, seq: Sequence[int] | np.ndarray, index: int = 0, *,
                      truncate: bool = False) -> tuple[np.ndarray, bool]:
        """One input's tokens, checked (non-empty, ids in the vocabulary, within the context)
        and ending with EOS where the model needs it; the flag says whether it was cut."""
        ids = np.asarray(seq)  # range-checked before the cast to int32 (no wrap-around)
        if ids.ndim != 1 or len(ids) == 0:
            raise InputError(f"input {index} has no tokens", param="input")
        if not np.issubdtype(ids.dtype, np.integer) or ids.min() < 0 \
                or ids.max() >= self.n_vocab:
            raise InputError(f"input {index} has token ids outside 0..{self.n_vocab - 1}",
                             param="input")
        tokens = self._with_eos(ids.astype(np.int32, copy=False))
        if len(tokens) <= self.max_tokens:
            return tokens, False
        if not truncate:
            raise InputTooLong(
                f"input {index} has {len(tokens)} tokens but the context holds "
                f"{self.max_tokens}; split it, or ask for truncation",
                index=index, n_tokens=len(tokens), limit=self.max_tokens)
        return self._truncate(tokens), True

    @property
    def closed(self) -> bool:
        return self._closed

    def close(self) -> None:
        """Free the model and its contexts (waiting for a decode in progress).  Idempotent;
        afterwards every call raises :class:`EngineError`."""
        with self._long_lock, self._side_lock, self._lock.hold(urgent=True):
            self._closed = True
            self._free_lanes()
            if self._model:
                with _llama.guarded():
                    lc.llama_model_free(self._model)
                    self._model = None

    def _check_open(self) -> None:
        if self._closed:
            raise EngineError(f"the engine for {self.path.name} is closed; create a new Engine "
                              f"(or use IdleEngine, which reloads on demand)")

    def __enter__(self) -> Engine:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __del__(self) -> None:
        with contextlib.suppress(Exception):  # interpreter shutdown
            self.close()

    # ---------------------------------------------------------------- internals
    def _header_int(self, *keys: str) -> int:
        for key in keys:
            value = self.metadata.get(f"{self.arch}.{key}", "")
            if value.isdigit():
                return int(value)
        return 0

    def _find_eos(self) -> int:
        text = self.spec.eos_token
        if text:
            data = text.encode("utf-8")
            buf = (lc.llama_token * 8)()
            n = lc.llama_tokenize(self._vocab, data, len(data), buf, 8, False, True)
            if n == 1:
                return int(buf[0])
        return int(lc.llama_vocab_eos(self._vocab))

    def _with_eos(self, tokens: np.ndarray) -> np.ndarray:
        """``tokens`` ending with the EOS token if the model needs one (added once)."""
        if self._eos_id is None or (len(tokens) and tokens[-1] == self._eos_id):
            return tokens
        return np.append(tokens, np.int32(self._eos_id))

    def _truncate(self, tokens: np.ndarray) -> np.ndarray:
        if self._adds_tail:  # keep the EOS/SEP the model was trained to see last
            return np.concatenate([tokens[: self.max_tokens - 1], tokens[-1:]])
        return tokens[: self.max_tokens]

    def check_dimensions(self, dimensions: int | None) -> None:
        """Raise :class:`InvalidDimensions` unless ``dimensions`` is None or in range."""
        if dimensions is None:
            return
        low, high = self.matryoshka_range
        if not isinstance(dimensions, int) or not low <= dimensions <= high:
            raise InvalidDimensions(
                f"dimensions must be an integer from {low} to {high} for {self.spec.name}, "
                f"got {dimensions!r}")



def _check_gguf_file(path: Path) -> None:
    """Refuse a missing file, or one whose header is not safe to give llama.cpp (see
    :mod:`gguf_embed.gguf_header`: a crafted header can abort the process inside it)."""
    check_gguf(path)


def _fit_spec(spec: ModelSpec, engine: Engine) -> ModelSpec:
    """Fill what the catalog does not say from the GGUF header."""
    pooling = spec.pooling
    if pooling is None:
        value = engine.metadata.get(f"{engine.arch}.pooling_type")
        pooling = POOLING_NAMES.get(int(value)) if value and value.isdigit() else None
        if pooling in (None, "none", "rank"):
            pooling = "last" if engine.causal else "mean"
        spec = replace(spec, pooling=pooling)
    if spec.repo is None and engine.arch == "qwen3" and pooling == "last":
        # An uncatalogued Qwen3 embedding GGUF (a local conversion): Qwen3-Embedding rules.
        spec = replace(spec, eos=True, eos_token="<|endoftext|>", query_prompt=QWEN3_QUERY,
                       default_task=QWEN3_TASK)
    elif spec.repo is None and pooling == "last" and engine.causal:
        spec = replace(spec, eos=True)
    if spec.dims is None:
        spec = replace(spec, dims=engine.n_embd)
    return spec


if TYPE_CHECKING:  # mypy checks that Engine keeps the contract
    def _is_an_embedding_engine(engine: Engine) -> EmbeddingEngine:
        return engine
