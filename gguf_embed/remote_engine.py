"""An embedding engine that embeds through an OpenAI-compatible ``/v1/embeddings`` server:
another ``gguf-embed serve`` (on a GPU box), llama-server, vLLM, Ollama, text-embeddings-
inference, OpenAI.  Behind the same contract as :class:`~gguf_embed.Engine`, so an index,
search, watch and MCP use it unchanged (docs/remote-engine.md).

    engine = RemoteEngine("http://gpu-box:8000", api_key=key)
    with Index("notes.db", engine) as index:
        index.add(["~/notes"])

Server kinds, found when the engine is made (one short probe, which also fails fast when the
server is down):

* ``gguf-embed``: its ``/health`` says so.  Prompts are the server's own (``input_type``
  ``query``/``document``, ``task``); chunk sizes are counted exactly with its ``/tokenize``
  (many texts per request); ``truncate`` is asked for in the request.
* ``llama-server``: it answers llama-server's ``/tokenize``: exact counts (plus one for EOS
  when the model needs it), one text per request; prompts applied here.
* ``openai``: anything else (vLLM, Ollama, TEI, OpenAI): token counts are estimated as one per
  :data:`BYTES_PER_TOKEN` UTF-8 bytes plus 2 (English averages 4-5 bytes per token, code 3,
  CJK 1-1.5 tokens per 3-byte character), so chunks come out smaller than asked; prompts applied
  here; an input to truncate is cut here to the estimate.

Prompts applied here come from the catalog entry the server's model name matches (``Qwen/
Qwen3-Embedding-0.6B``, ``qwen3-embedding:0.6b`` → ``qwen3-embedding-0.6b``), else none, and
``query_prefix``/``document_prefix`` replace them.  EOS is the server's business.

Requests: ``batch_size`` inputs each, ``concurrency`` at once, retried with backoff as
:mod:`gguf_embed._remote_http` says; :class:`~gguf_embed.errors.EngineUnavailable` names the
URL.  An answer is waited for ``timeout`` seconds (an embedding request), or ``probe_timeout``
(the start-up probes: what the server is and serves), and a request not answered in time is
an error at once, not retried.  An https:// server is verified with the default CA bundle
or, given ``ca_cert`` (a PEM file or a folder of them), with those CA certificates only
(:mod:`gguf_embed._remote_tls`).
The API key goes in the ``Authorization`` header to this server only and is never in a
message.  Vectors come back in full and are cut (Matryoshka) and normalized here.  Needs httpx
(``pip install "gguf-embed[remote]"``), imported when an engine is made.
"""

from __future__ import annotations

import hashlib
import os
import threading
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from ._remote_http import PROBE_TIMEOUT, ServerClient
from ._remote_util import (
    BYTES_PER_TOKEN,
    Answer,
    catalog_spec,
    clean_url,
    cut_to_estimate,
    estimate_tokens,
    parse_embeddings,
    remote_facts,
)
from ._text import check_text
from ._vectors import finish
from .errors import EngineError, InputError, InvalidDimensions
from .models import ModelSpec
from .protocol import EmbeddingEngine, Embeddings, EmbedShortcut, Input, Prepared
from .remote_identity import FINGERPRINT_TEXT

DEFAULT_CONTEXT = 512  # tokens per input, where neither the server nor the catalog says
BACKOFF = 0.5  # seconds before the first retry; doubled at each (capped at 30 s)
TOKENIZE_BATCH = 256
CACHE_SIZE = 100_000


@dataclass
class RemotePrepared(Prepared):
    """Texts ready to send (prompts applied where this side applies them)."""

    texts: list[str] = field(default_factory=list)
    input_type: str = "document"
    task: str | None = None
    truncate: bool = False

    def __len__(self) -> int:
        return len(self.texts)


class RemoteEngine(EmbedShortcut):
    """An :class:`~gguf_embed.protocol.EmbeddingEngine` over an embedding server's HTTP API."""

    def __init__(self, url: str, *, model: str | None = None, api_key: str | None = None,
                 batch_size: int = 64, concurrency: int = 2, retries: int = 5,
                 backoff: float | None = None, timeout: float = 300.0,
                 probe_timeout: float = PROBE_TIMEOUT,
                 context: int | None = None, query_prefix: str | None = None,
                 document_prefix: str | None = None,
                 ca_cert: str | os.PathLike[str] | None = None, transport: Any = None,
                 sleep: Callable[[float], None] | None = None) -> None:
        if batch_size < 1 or concurrency < 1 or retries < 1:
            raise InputError("batch size, concurrency and retries must be at least 1")
        self.url = clean_url(url)
        self.batch_size, self.concurrency = batch_size, concurrency
        self._http = ServerClient(self.url, api_key=api_key, retries=retries,
                                  backoff=BACKOFF if backoff is None else backoff,
                                  timeout=timeout, probe_timeout=probe_timeout,
                                  transport=transport, ca_cert=ca_cert,
                                  sleep=sleep)
        self._json = self._http.json
        self._pool: ThreadPoolExecutor | None = None
        self._pool_lock = threading.Lock()
        self._counts: dict[str, int] = {}
        try:
            self._probe(model, context, query_prefix, document_prefix)
        except BaseException:
            self.close()
            raise

    # ---------------------------------------------------------------- the probe
    def _probe(self, model: str | None, context: int | None, query_prefix: str | None,
               document_prefix: str | None) -> None:
        health = self._json("GET", "/health", None, optional=True, probe=True)
        if isinstance(health, dict) and health.get("server") == "gguf-embed":
            self.kind = "gguf-embed"
            if query_prefix is not None or document_prefix is not None:
                raise InputError("a gguf-embed server applies its model's own prompts: leave "
                                 "out --query-prefix and --document-prefix", param="embed_url")
            name = str(health.get("model") or "")
            self.model = model or name
            spec = ModelSpec(name=name, repo=None, file=str(health.get("file") or name),
                             pooling=health.get("pooling"), eos=bool(health.get("eos")),
                             query_prompt=health.get("query_prompt") or "{text}",
                             document_prompt=health.get("document_prompt") or "{text}",
                             default_task=health.get("default_task") or "",
                             n_ctx=health.get("context"),
                             matryoshka_min=health.get("matryoshka_min"))
            self._fingerprint = str(health.get("fingerprint") or "")
        else:
            tokens = self._json("POST", "/tokenize", {"content": "probe", "add_special": True},
                                optional=True, probe=True)
            self.kind = "llama-server" if isinstance(tokens, dict) and isinstance(
                tokens.get("tokens"), list) else "openai"
            self.model = model or self._served_model()
            known = catalog_spec(self.model)
            spec = replace(known, name=self.model) if known else ModelSpec(
                name=self.model, repo=None, file=self.model)
            if query_prefix is not None:
                spec = replace(spec, query_prompt=query_prefix + "{text}")
            if document_prefix is not None:
                spec = replace(spec, document_prompt=document_prefix + "{text}")
            self._fingerprint = ""
        vector, served = self._fingerprint_vector(spec)
        self.server_model = served or self.model
        self.n_embd = len(vector)
        self.vector = vector
        self.spec = replace(spec, dims=self.n_embd)
        self.max_tokens = int(context or spec.n_ctx or DEFAULT_CONTEXT)
        self.pooling = spec.pooling or "unknown"
        if not self._fingerprint:
            self._fingerprint = "remote:" + hashlib.sha256(
                self.server_model.encode("utf-8")).hexdigest()[:32]

    def _served_model(self) -> str:
        listing = self._json("GET", "/v1/models", None, optional=True, probe=True)
        data = listing.get("data") if isinstance(listing, dict) else None
        if isinstance(data, list) and data and isinstance(data[0], dict) and data[0].get("id"):
            return str(data[0]["id"])
        if self._http.redirect is not None:  # the probe was sent elsewhere: say where
            raise self._http.redirect
        raise InputError(f"the server at {self.url} does not list its models (GET /v1/models: "
                         f"{self._http.missed or 'no model in the list'}): if it is an "
                         f"embeddings API, name the model with --embed-model; else check "
                         f"--embed-url", param="embed_model")

    def _fingerprint_vector(self, spec: ModelSpec) -> tuple[np.ndarray, str | None]:
        """The vector of the fixed text as a document (its prompt applied by whichever side
        applies prompts), and the model the server says answered."""
        text = FINGERPRINT_TEXT if self.kind == "gguf-embed" else spec.format_document(
            FINGERPRINT_TEXT)
        answer = self._post_embeddings([text], "document", None, truncate=False)
        return answer.vectors[0], answer.model

    # ---------------------------------------------------------------- the contract
    @property
    def path(self) -> Path:
        return Path(self.server_model)

    @property
    def fingerprint(self) -> str:
        return self._fingerprint

    @property
    def dims(self) -> int:
        return self.n_embd

    def identity_extra(self) -> dict[str, Any]:
        """What :func:`gguf_embed.index.identity` records besides the usual keys."""
        return {"model_file": self.spec.file if self.kind == "gguf-embed" else None,
                "model_size": None,
                "remote": {"kind": self.kind, "url": self.url, "model": self.server_model,
                           "dims": self.n_embd,
                           "vector": [round(float(x), 6) for x in self.vector]}}

    def info(self) -> dict[str, Any]:
        return {"url": self.url, "kind": self.kind, "name": self.server_model,
                "dims": self.n_embd, "context": self.max_tokens, "pooling": self.pooling,
                "query_prompt": self.spec.query_prompt,
                "document_prompt": self.spec.document_prompt,
                "batch_size": self.batch_size, "concurrency": self.concurrency}

    def check_dimensions(self, dimensions: int | None) -> None:
        if dimensions is None:
            return
        low = self.spec.matryoshka_min or 1
        if not isinstance(dimensions, int) or not low <= dimensions <= self.n_embd:
            raise InvalidDimensions(f"dimensions must be an integer from {low} to "
                                    f"{self.n_embd} for {self.server_model}, got {dimensions!r}")

    def tokenize(self, text: str) -> np.ndarray:
        """The server's token ids for ``text`` (gguf-embed and llama-server kinds only)."""
        if self.kind == "openai":
            raise EngineError(f"the server at {self.url} cannot tokenize; count_tokens() "
                              f"estimates instead")
        if self.kind == "gguf-embed":
            return np.asarray(self._tokenize_many([text])[0], dtype=np.int32)
        body = self._json("POST", "/tokenize", {"content": text, "add_special": True})
        tokens = body.get("tokens") if isinstance(body, dict) else None
        if not isinstance(tokens, list):
            raise EngineError(f"the server at {self.url} answered /tokenize without tokens")
        return np.asarray(tokens, dtype=np.int32)

    def count_tokens(self, texts: Sequence[str]) -> list[int]:
        """Tokens of each text as the server's model sees it: exact (gguf-embed), exact plus
        EOS (llama-server), or the estimate (module docstring).  Counts are cached."""
        cache = self._counts  # shared by threads: read into found, never cleared under it
        found = {t: n for t in dict.fromkeys(texts) if (n := cache.get(t)) is not None}
        todo = [t for t in dict.fromkeys(texts) if t not in found]
        new: dict[str, int] = {}
        if self.kind == "gguf-embed":
            for start in range(0, len(todo), TOKENIZE_BATCH):
                part = todo[start:start + TOKENIZE_BATCH]
                for text, ids in zip(part, self._tokenize_many(part), strict=True):
                    new[text] = len(ids)
        elif self.kind == "llama-server":
            new = {t: len(self.tokenize(t)) + int(self.spec.eos) for t in todo}
        else:
            new = {t: estimate_tokens(t) for t in todo}
        if len(cache) + len(new) > CACHE_SIZE:
            self._counts = cache = {}
        cache.update(new)
        found.update(new)
        return [found[t] for t in texts]

    def _tokenize_many(self, texts: list[str]) -> list[list[int]]:
        answer = self._json("POST", "/tokenize", {"content": texts})
        tokens = answer.get("tokens") if isinstance(answer, dict) else None
        if not isinstance(tokens, list) or len(tokens) != len(texts):
            raise EngineError(f"the server at {self.url} answered /tokenize without one "
                              f"token list per text")
        return tokens

    def prepare(self, inputs: Sequence[Input], *, query: bool = False, task: str | None = None,
                truncate: bool = False) -> RemotePrepared:
        texts = []
        for i, item in enumerate(inputs):
            if not isinstance(item, str):
                raise InputError(f"input {i}: a remote engine sends texts, not token ids",
                                 param="input")
            if not item:
                raise InputError(f"input {i} is empty; pass non-empty text", param="input")
            check_text(item, f"input {i}", "input")
            texts.append(item)
        cut: list[int] = []
        if self.kind != "gguf-embed":  # prompts, and truncation, happen here
            texts = [self.spec.format_query(t, task) if query else self.spec.format_document(t)
                     for t in texts]
            if truncate:
                for i, text in enumerate(texts):
                    if estimate_tokens(text) > self.max_tokens:
                        texts[i] = cut_to_estimate(text, self.max_tokens)
                        cut.append(i)
        return RemotePrepared([], cut, texts, "query" if query else "document", task, truncate)

    def embed_prepared(self, prepared: Prepared | Sequence[np.ndarray], *,
                       dimensions: int | None = None, urgent: bool = False) -> Embeddings:
        if not isinstance(prepared, RemotePrepared):
            raise EngineError("a RemoteEngine embeds what its prepare() returns; token ids "
                              "are never sent to a remote server")
        self.check_dimensions(dimensions)
        texts = prepared.texts
        if not texts:
            return Embeddings(np.zeros((0, dimensions or self.n_embd), dtype=np.float32))
        batches = [list(range(s, min(s + self.batch_size, len(texts))))
                   for s in range(0, len(texts), self.batch_size)]

        def send(idx: list[int]) -> Answer:
            return self._post_embeddings([texts[i] for i in idx], prepared.input_type,
                                         prepared.task, prepared.truncate)

        if len(batches) == 1:
            answers = [send(batches[0])]
        else:
            answers = list(self._executor().map(send, batches))
        raw = np.empty((len(texts), self.n_embd), dtype=np.float32)
        counts = [0] * len(texts)
        cut = set(prepared.truncated)
        for idx, answer in zip(batches, answers, strict=True):
            raw[idx] = answer.vectors
            for i, n in zip(idx, answer.tokens, strict=True):
                counts[i] = n
            cut.update(idx[i] for i in answer.cut)
        return Embeddings(finish(raw, dimensions), counts, sorted(cut))

    def encode(self, texts: Sequence[str], *, query: bool = False, task: str | None = None,
               dimensions: int | None = None, truncate: bool = False) -> Embeddings:
        self.check_dimensions(dimensions)
        return self.embed_prepared(self.prepare(texts, query=query, task=task,
                                                truncate=truncate), dimensions=dimensions,
                                   urgent=query)


    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=False, cancel_futures=True)
            self._pool = None
        self._http.close()

    def __enter__(self) -> RemoteEngine:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ---------------------------------------------------------------- HTTP
    def _executor(self) -> ThreadPoolExecutor:
        with self._pool_lock:
            if self._pool is None:
                self._pool = ThreadPoolExecutor(self.concurrency,
                                                thread_name_prefix="gguf-embed-remote")
            return self._pool

    def _post_embeddings(self, texts: list[str], input_type: str, task: str | None,
                         truncate: bool) -> Answer:
        """One request: the vectors (checked: one per text, finite, ``n_embd`` long once
        known), token counts apportioned from ``usage``, the model named in the answer, and
        which inputs the server says it cut (``"truncated"``: per item, or a list)."""
        body: dict[str, Any] = {"input": texts, "model": self.model,
                                "encoding_format": "base64" if self.kind == "gguf-embed"
                                else "float"}
        if self.kind == "gguf-embed":
            body["input_type"] = input_type
            if task is not None and input_type == "query":
                body["task"] = task
            if truncate:
                body["truncate"] = True
        answer = self._json("POST", "/v1/embeddings", body)
        return parse_embeddings(answer, texts, getattr(self, "n_embd", None), self.url)


if TYPE_CHECKING:  # mypy checks that RemoteEngine keeps the contract
    def _is_an_embedding_engine(engine: RemoteEngine) -> EmbeddingEngine:
        return engine


__all__ = ["BYTES_PER_TOKEN", "RemoteEngine", "RemotePrepared", "catalog_spec", "clean_url",
           "estimate_tokens", "remote_facts"]
