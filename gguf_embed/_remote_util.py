"""What the remote engine (remote_engine.py) needs that involves no network: the server's
URL, catalog names as servers spell them, the token estimate for servers that cannot count,
sharing a request's token usage among its inputs, and what ``gguf-embed serve`` tells a remote
engine in ``/health``.  Standard library and the catalog only."""

from __future__ import annotations

import base64
import math
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import numpy as np

from .errors import EngineError, InputError, first_line, quoted
from .models import CATALOG, ModelSpec

BYTES_PER_TOKEN = 3  # the estimate's divisor where the server cannot count tokens


def clean_url(url: str) -> str:
    """The server's root: ``http(s)://host[:port][/prefix]`` without a trailing ``/v1`` or
    ``/v1/embeddings``; a key or query string in it is refused (they would be recorded)."""
    shown = quoted(repr(re.sub(r"//[^/?#]*@", "//…@", url)))  # never a key given in it
    try:
        parts = urlsplit(url.strip())
        port = parts.port  # a ValueError unless a number from 0 to 65535
    except ValueError as exc:
        raise InputError(f"--embed-url {shown} is not a valid URL "
                         f"({first_line(exc, limit=100)})", param="embed_url") from exc
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise InputError(f"--embed-url {shown} is not an http:// or https:// URL",
                         param="embed_url")
    odd = "a space or control character" if any(
        c.isspace() or not c.isprintable() for c in parts.netloc) else "port 0" if port == 0 \
        else ""
    if odd:
        raise InputError(f"--embed-url {shown} is not a valid URL ({odd})",
                         param="embed_url")
    if parts.username or parts.password or parts.query or parts.fragment:
        raise InputError("--embed-url must not hold a user, key or query string: give the "
                         "key with --embed-api-key", param="embed_url")
    path = parts.path.rstrip("/")
    for tail in ("/embeddings", "/v1"):
        path = path.removesuffix(tail)
    return f"{parts.scheme}://{parts.netloc}{path}"

def catalog_spec(name: str) -> ModelSpec | None:
    """The catalog entry a server's model name means, if any (case, an owner/ prefix, ``:``
    and ``_`` as ``-``, a ``-gguf`` or ``:latest`` suffix do not matter)."""
    key = name.strip().lower().rsplit("/", 1)[-1].removesuffix(":latest")
    key = re.sub(r"[:_]", "-", key).removesuffix("-gguf")
    spec = CATALOG.get(key)
    return spec if spec is not None and spec.kind == "embedding" else None

def remote_facts(engine: Any) -> dict[str, Any]:
    """What ``gguf-embed serve`` adds to ``/health`` so that a remote engine knows it: the
    server kind, the model file's fingerprint, pooling and prompts."""
    spec = engine.spec
    return {"server": "gguf-embed", "file": Path(engine.path).name,
            "fingerprint": engine.fingerprint, "pooling": engine.pooling, "eos": spec.eos,
            "query_prompt": spec.query_prompt, "document_prompt": spec.document_prompt,
            "default_task": spec.default_task, "matryoshka_min": spec.matryoshka_min}

def estimate_tokens(text: str) -> int:
    """An upper estimate of the tokens of ``text`` for servers that cannot count them."""
    return math.ceil(len(text.encode("utf-8", "surrogatepass")) / BYTES_PER_TOKEN) + 2

def cut_to_estimate(text: str, tokens: int) -> str:
    """The start of ``text`` whose estimate fits ``tokens``."""
    data = text.encode("utf-8", "surrogatepass")[: max(1, tokens - 2) * BYTES_PER_TOKEN]
    return data.decode("utf-8", "ignore")

def apportion(total: Any, texts: list[str]) -> list[int]:
    """A request's ``usage.prompt_tokens`` shared among its texts by length (the sum is
    exact; servers do not say per input); estimates when the server gives no usage."""
    if not isinstance(total, int) or isinstance(total, bool) or total < 0:
        return [estimate_tokens(t) for t in texts]
    sizes = [len(t) or 1 for t in texts]
    whole = sum(sizes)
    shares = [total * s // whole for s in sizes]
    shares[-1] += total - sum(shares)
    return shares

def server_message(response: Any) -> str:
    try:
        body = response.json()
        error = body.get("error") if isinstance(body, dict) else None
        text = error.get("message") if isinstance(error, dict) else (error or body)
    except ValueError:
        text = response.text
    return first_line(ValueError(str(text)), empty="(no message)", limit=300)


@dataclass
class Answer:
    """One ``/v1/embeddings`` answer, checked."""

    vectors: np.ndarray
    tokens: list[int]  # apportioned from usage (see apportion)
    model: str | None
    cut: list[int]  # inputs the server says it truncated


def parse_embeddings(answer: Any, texts: list[str], want: int | None, url: str) -> Answer:
    """The vectors of ``answer`` in input order, checked: one per text, finite, ``want`` long
    (once known); which inputs the server says it cut (``"truncated"``: per item, or a list);
    token counts from ``usage``; the model named."""
    data = answer.get("data") if isinstance(answer, dict) else None
    if not isinstance(data, list) or len(data) != len(texts):
        raise EngineError(f"the server at {url} answered {len(texts)} inputs with "
                          f"{len(data) if isinstance(data, list) else 'no'} embeddings")
    rows: list[Any] = [None] * len(texts)
    listed = answer.get("truncated")
    cut = {i for i in listed if isinstance(i, int) and 0 <= i < len(texts)} \
        if isinstance(listed, list) else set()
    for pos, item in enumerate(data):
        i = item.get("index", pos) if isinstance(item, dict) else pos
        emb = item.get("embedding") if isinstance(item, dict) else None
        if isinstance(emb, str):
            emb = np.frombuffer(base64.b64decode(emb), dtype="<f4")
        if not isinstance(i, int) or not 0 <= i < len(texts) or emb is None:
            raise EngineError(f"the server at {url} answered an embedding without "
                              f"a usable index or vector")
        rows[i] = np.asarray(emb, dtype=np.float32)
        if isinstance(item, dict) and item.get("truncated"):
            cut.add(i)
    dims = {len(r) for r in rows if r is not None}
    if any(r is None for r in rows) or len(dims) != 1 \
            or (want is not None and dims != {want}):
        raise EngineError(f"the server at {url} answered vectors of {sorted(dims)} "
                          f"dims; this engine has {want}")
    vectors = np.stack(rows)
    if not np.isfinite(vectors).all():
        raise EngineError(f"the server at {url} answered a vector with NaN or "
                          f"infinite values")
    usage = answer.get("usage")
    total = usage.get("prompt_tokens") if isinstance(usage, dict) else None
    model = answer.get("model")
    return Answer(vectors, apportion(total, texts), model if isinstance(model, str)
                   else None, sorted(cut))


__all__ = ["BYTES_PER_TOKEN", "Answer", "apportion", "catalog_spec", "clean_url", "cut_to_estimate",
           "estimate_tokens", "parse_embeddings", "remote_facts", "server_message"]
