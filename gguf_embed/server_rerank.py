"""The rerank routes of :mod:`gguf_embed.server`, in the shapes clients post:

    POST /v1/rerank, /rerank, /v1/reranking, /reranking
        Cohere v1 / Jina / llama-server / Open WebUI's external reranker:
        {"model", "query", "documents": [str | {"text"}], "top_n", "return_documents"}
    POST /v2/rerank
        Cohere v2 (``cohere.ClientV2``, langchain-cohere, LlamaIndex's CohereRerank):
        {"model", "query", "documents": [str], "top_n", "max_tokens_per_doc"}

Both answer ``{"id", "results": [{"index", "relevance_score", "raw_score"}], "meta",
"model", "usage"}``, best first.  ``relevance_score`` is in 0..1 as Cohere documents it (the
sigmoid of a cross-encoder's logit; Qwen3-Reranker's P(yes) as it is), which is what Open
WebUI compares with its relevance threshold; ``raw_score`` is the model's own output.  A
document cut (to the reranker's context, or to ``max_tokens_per_doc`` tokens, of either
version) is marked ``"truncated": true``.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Callable
from typing import Any

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from .server_http import ApiError, JSONResponse, handler, read_json

ModelCheck = Callable[[Any], None]


def rerank_routes(reranker: Any | None, name: str | None, check_model: ModelCheck,
                  max_inputs: int, max_body: int) -> list[Route]:
    """The five rerank routes (404 envelopes when no reranker is served)."""

    async def answer(request: Request, version: int) -> Response:
        if reranker is None:
            raise ApiError(404, "no reranker is served; start the server with --reranker "
                                "MODEL", code="no_reranker")
        data = await read_json(request, max_body)
        check_model(data.get("model"))
        query = data.get("query")
        if not isinstance(query, str) or not query.strip():
            raise ApiError(400, "query must be a non-empty string", param="query")
        texts = _documents(data.get("documents"), max_inputs)
        top_n = data.get("top_n", len(texts))
        if top_n is None:
            top_n = len(texts)
        if isinstance(top_n, bool) or not isinstance(top_n, int) or top_n < 1:
            raise ApiError(400, "top_n must be a positive integer", param="top_n")
        per_doc = data.get("max_tokens_per_doc")
        if per_doc is not None and (isinstance(per_doc, bool) or not isinstance(per_doc, int)
                                    or per_doc < 1):
            raise ApiError(400, "max_tokens_per_doc must be a positive integer",
                           param="max_tokens_per_doc")
        request.state.inputs = len(texts)
        result = await asyncio.to_thread(  # each document cut to max_tokens_per_doc
            lambda: reranker.score(query, texts, max_doc_tokens=per_doc))
        scores = reranker.relevance(result.scores)
        cut = set(result.truncated)
        order = sorted(range(len(texts)), key=lambda i: (-float(result.scores[i]), i))
        items = []
        for i in order[:top_n]:
            item: dict[str, Any] = {"index": i, "relevance_score": float(scores[i]),
                                    "raw_score": float(result.scores[i])}
            if data.get("return_documents"):
                item["document"] = {"text": texts[i]}
            if i in cut:  # cut to the context: said, never silent
                item["truncated"] = True
            items.append(item)
        used = sum(result.token_counts)
        request.state.tokens = used
        return JSONResponse({
            "object": "list", "id": str(uuid.uuid4()), "model": name, "results": items,
            "meta": {"api_version": {"version": str(version)},
                     "billed_units": {"search_units": 1}},
            "usage": {"prompt_tokens": used, "total_tokens": used}})

    async def v1(request: Request) -> Response:
        return await answer(request, 1)

    async def v2(request: Request) -> Response:
        return await answer(request, 2)

    return [
        Route("/v1/rerank", handler(v1), methods=["POST"]),  # llama-server's four names
        Route("/rerank", handler(v1), methods=["POST"]),
        Route("/v1/reranking", handler(v1), methods=["POST"]),
        Route("/reranking", handler(v1), methods=["POST"]),
        Route("/v2/rerank", handler(v2), methods=["POST"]),  # Cohere v2
    ]


def _documents(raw: Any, max_inputs: int) -> list[str]:
    """Rerank documents: strings, or objects with a "text" (Cohere's older shape)."""
    if not isinstance(raw, list) or not raw:
        raise ApiError(400, "documents must be a non-empty array of strings", param="documents")
    if len(raw) > max_inputs:
        raise ApiError(400, f"too many documents: {len(raw)} > {max_inputs}", param="documents")
    texts = []
    for i, item in enumerate(raw):
        text = item.get("text") if isinstance(item, dict) else item
        if not isinstance(text, str):
            raise ApiError(400, f"documents[{i}] must be a string", param="documents")
        texts.append(text)
    return texts
