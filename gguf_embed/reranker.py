"""Reranking: (query, passage) pairs → one relevance score each, with a rank-pooling GGUF.

llama.cpp runs the model's classification head itself (``LLAMA_POOLING_TYPE_RANK``):

* BERT-family cross-encoders (bge-reranker-base is XLM-R): the first token's state through
  ``classifier.dense`` + tanh + ``out_proj``: the score is a logit.  Each pair is built from
  token ids with the tokenizer's pair template: ``<s> q </s></s> d </s>`` (RoBERTa/XLM-R) or
  ``[CLS] q [SEP] d [SEP]`` (BERT); never from a string holding a literal separator.
* Qwen3-Reranker (a causal LM): the last token's state through the "yes"/"no" rows of the LM
  head, softmaxed: the score is P(yes).  Each pair is the model's own prompt.

Pairs are packed into shared decodes by the engine's own batching (``Engine`` below, reused).
A pair longer than the context is cut (the passage first) and reported, never an error.
"""

from __future__ import annotations

import ctypes
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from . import _llama
from ._llama_binding import lc
from .engine import Engine, EngineOptions, _check_gguf_file
from .errors import InputError, ModelLoadError
from .gguf_header import Array, read_header
from .models import ModelSpec, ResolvedModel, spec_for_file

QWEN3_RERANK_INSTRUCTION = ("Given a web search query, retrieve relevant passages that answer "
                            "the query")
# Qwen3-Reranker's prompt, as in its model card and llama.cpp's converter ("rerank" template).
QWEN3_RERANK_PREFIX = (
    "<|im_start|>system\nJudge whether the Document meets the requirements based on the Query "
    "and the Instruct provided. Note that the answer can only be \"yes\" or \"no\"."
    "<|im_end|>\n<|im_start|>user\n")
QWEN3_RERANK_MIDDLE = "<Instruct>: {instruction}\n<Query>: {query}\n<Document>: {document}"
QWEN3_RERANK_SUFFIX = "<|im_end|>\n<|im_start|>assistant\n<think>\n\n</think>\n\n"
CAUSAL_RERANK_ARCHS = {"qwen3"}
DEFAULT_CONTEXT = 2048  # tokens per pair; longer pairs are cut (the passage first)


@dataclass
class RerankScores:
    """Scores in input order, with what it took to make them."""

    scores: np.ndarray  # (n,) float32
    token_counts: list[int] = field(default_factory=list)
    truncated: list[int] = field(default_factory=list)  # indices of pairs cut to the context


class _RankEngine(Engine):
    """The embedding engine's loading, packing and decoding, in rank pooling: its "vectors"
    are the ``n_cls_out`` outputs of the classification head."""

    allow_rank = True


class Reranker:
    """One rank-pooling GGUF loaded in llama.cpp.  Thread-safe like :class:`Engine` (calls
    are serialized)."""

    def __init__(self, model: str | Path | ResolvedModel, *, spec: ModelSpec | None = None,
                 n_ctx: int | None = None, n_threads: int | None = None,
                 n_gpu_layers: int | None = None, batch_tokens: int = 2048,
                 instruction: str | None = None) -> None:
        if isinstance(model, ResolvedModel):
            path, spec = model.path, spec or model.spec
        else:
            path = Path(model)
        _check_gguf_file(path)
        spec = spec or spec_for_file(path)
        if spec.kind != "reranker" and spec.repo is not None:
            raise ModelLoadError(
                f"{spec.name} is an embedding model, not a reranker: give it as the embedding "
                f"model (--model), and a reranker such as bge-reranker-base or "
                f"qwen3-reranker-0.6b to --rerank")
        self.path = path
        self.instruction = instruction or QWEN3_RERANK_INSTRUCTION
        context = n_ctx or min(spec.n_ctx or DEFAULT_CONTEXT, DEFAULT_CONTEXT)
        self._engine = _RankEngine(
            path, spec=replace(spec, pooling="rank", eos=False), n_ctx=context,
            n_threads=n_threads, n_gpu_layers=n_gpu_layers,
            options=EngineOptions(batch_tokens=max(batch_tokens, 64)))
        engine = self._engine
        try:  # a reranker cut short (Ctrl-C) frees its model
            self.arch = engine.arch
            self.metadata = engine.metadata
            problem = head_problem(self.arch, _llama.is_rank_model(engine._model, self.metadata,
                                                                    self.arch),
                                   self.metadata, gguf_tensor_names(path), engine.causal)
            if problem:
                engine.close()
                raise ModelLoadError(f"{path}: {problem}")
            self.n_cls_out = int(lc.llama_model_n_cls_out(engine._model)) or 1
            engine.n_embd = self.n_cls_out  # the engine's pooled output is the head's output
            self.spec = engine.spec
            self.max_tokens = engine.max_tokens
            self.causal = engine.causal
            self.family = ("qwen3" if self.causal else
                           "bert" if self.metadata.get("tokenizer.ggml.model") == "bert"
                           else "roberta")
            vocab = engine._vocab
            self._bos = int(lc.llama_vocab_bos(vocab))
            sep = int(lc.llama_vocab_sep(vocab))
            self._sep = sep if sep >= 0 else int(lc.llama_vocab_eos(vocab))
            if self.family == "qwen3":
                self._prefix = self.tokenize(QWEN3_RERANK_PREFIX, special=True)
                self._suffix = self.tokenize(QWEN3_RERANK_SUFFIX, special=True)
        except BaseException:
            engine.close()
            raise

    # ---------------------------------------------------------------- public API
    def info(self) -> dict[str, Any]:
        return {"path": str(self.path), "name": self.spec.name, "architecture": self.arch,
                "format": self.family, "context": self.max_tokens,
                "outputs": self.n_cls_out, "threads": self._engine.n_threads,
                "gpu_layers": self._engine.n_gpu_layers}

    def tokenize(self, text: str, *, special: bool = False) -> np.ndarray:
        """Token ids of ``text`` with no BOS/EOS added; ``special`` parses ``<|im_end|>`` and
        the like as control tokens (only for our own prompt, never for user text)."""
        data = text.encode("utf-8")
        vocab = self._engine._vocab
        capacity = len(data) + 8
        buf = (lc.llama_token * capacity)()
        n = lc.llama_tokenize(vocab, data, len(data), buf, capacity, False, special)
        if n < 0:
            capacity = -n
            buf = (lc.llama_token * capacity)()
            n = lc.llama_tokenize(vocab, data, len(data), buf, capacity, False, special)
        return np.frombuffer(buf, dtype=np.int32, count=n).copy()  # type: ignore[call-overload]

    def count_tokens(self, text: str) -> int:
        return len(self.tokenize(text))

    def detokenize(self, ids: np.ndarray) -> str:
        """The text of token ids (a character split at the end is dropped)."""
        tokens = (lc.llama_token * max(1, len(ids)))(*(int(t) for t in ids))
        capacity = 8 * len(ids) + 16
        buf = ctypes.create_string_buffer(capacity)
        n = lc.llama_detokenize(self._engine._vocab, tokens, len(ids), buf, capacity, False,
                                False)
        if n < 0:
            capacity = -n
            buf = ctypes.create_string_buffer(capacity)
            n = lc.llama_detokenize(self._engine._vocab, tokens, len(ids), buf, capacity,
                                    False, False)
        return buf.raw[:n].decode("utf-8", errors="ignore")

    def pair_tokens(self, query: str, passage: str, instruction: str | None = None, *,
                    max_doc_tokens: int | None = None) -> tuple[np.ndarray, bool]:
        """The token ids the model scores for one pair, and whether they were cut (to the
        context, or the passage to its first ``max_doc_tokens`` tokens, as Cohere's
        ``max_tokens_per_doc`` asks)."""
        cut_doc = False
        if max_doc_tokens is not None and self.family == "qwen3":
            ids = self.tokenize(passage)
            if len(ids) > max_doc_tokens:  # the passage sits inside the prompt's text
                passage, cut_doc = self.detokenize(ids[:max_doc_tokens]), True
        if self.family == "qwen3":
            middle = self.tokenize(QWEN3_RERANK_MIDDLE.replace(
                "{instruction}", instruction or self.instruction).replace(
                "{query}", query).replace("{document}", passage))
            budget = self.max_tokens - len(self._prefix) - len(self._suffix)
            if budget < 1:
                raise InputError(f"the reranker's context ({self.max_tokens} tokens) is "
                                 f"smaller than its prompt; raise n_ctx")
            cut = len(middle) > budget  # the passage is last: cutting the tail cuts it
            return np.concatenate([self._prefix, middle[:budget], self._suffix]), \
                cut or cut_doc
        q, d = self.tokenize(query), self.tokenize(passage)
        if max_doc_tokens is not None and len(d) > max_doc_tokens:
            d, cut_doc = d[:max_doc_tokens], True
        seps = [self._sep, self._sep] if self.family == "roberta" else [self._sep]
        budget = self.max_tokens - 2 - len(seps)
        cut = len(q) + len(d) > budget
        if cut:
            q = q[:max(budget - len(d), budget // 2)]
            d = d[:budget - len(q)]
        ids = np.concatenate([[self._bos], q, seps, d, [self._sep]]).astype(np.int32)
        return ids, cut or cut_doc

    def score(self, query: str, passages: Sequence[str], *, instruction: str | None = None,
              max_doc_tokens: int | None = None) -> RerankScores:
        """One score per passage, in input order (higher is more relevant); ``max_doc_tokens``
        cuts each passage to its first tokens (reported in ``truncated``)."""
        if not isinstance(query, str) or not query.strip():
            raise InputError("the query is empty", param="query")
        seqs: list[np.ndarray] = []
        truncated: list[int] = []
        for i, passage in enumerate(passages):
            if not isinstance(passage, str):
                raise InputError(f"document {i} is not a string", param="documents")
            tokens, cut = self.pair_tokens(query, passage, instruction,
                                           max_doc_tokens=max_doc_tokens)
            seqs.append(tokens)
            if cut:
                truncated.append(i)
        if not seqs:
            return RerankScores(np.zeros(0, dtype=np.float32))
        # the engine takes its lock per decode; scoring is query-time work, so it goes first
        out = self._engine._embed_sequences(seqs, urgent=True)
        return RerankScores(np.ascontiguousarray(out[:, 0], dtype=np.float32),
                            [len(s) for s in seqs], truncated)

    @property
    def score_kind(self) -> str:
        """``"probability"``: Qwen3-Reranker's P(yes), already in 0..1; ``"logit"``: a
        cross-encoder's head (bge-reranker, any real number)."""
        return "probability" if self.family == "qwen3" else "logit"

    def relevance(self, scores: np.ndarray) -> np.ndarray:
        """Scores as relevance in 0..1 (Cohere's and TEI's convention, which clients compare
        with a threshold): the sigmoid of a logit; a probability as it is."""
        return relevance(scores, self.score_kind)

    def rerank(self, query: str, documents: Sequence[str], *, top_n: int | None = None,
               instruction: str | None = None) -> list[tuple[int, float]]:
        """(document index, score), best first, at most ``top_n``."""
        scores = self.score(query, documents, instruction=instruction).scores
        order = sorted(range(len(scores)), key=lambda i: (-float(scores[i]), i))
        return [(i, float(scores[i])) for i in order[:top_n]]

    def close(self) -> None:
        self._engine.close()

    def __enter__(self) -> Reranker:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def relevance(scores: np.ndarray, kind: str) -> np.ndarray:
    """``scores`` in 0..1: the sigmoid where ``kind`` is ``"logit"``, unchanged otherwise."""
    raw = np.asarray(scores, dtype=np.float64)
    if kind != "logit":
        return raw.astype(np.float32)
    return (0.5 * (1.0 + np.tanh(0.5 * raw))).astype(np.float32)  # sigmoid, no overflow


def head_problem(arch: str, marked: bool, metadata: dict[str, str], tensors: set[str],
                 causal: bool) -> str | None:
    """Why this GGUF cannot score pairs correctly in rank pooling, or None."""
    has_out, has_dense = "cls.output.weight" in tensors, "cls.weight" in tensors
    if causal:
        if arch not in CAUSAL_RERANK_ARCHS:
            return (f"a causal {arch} model is not a reranker gguf-embed can run (Qwen3-"
                    f"Reranker is); if it is an embedding model, give it to --model")
        if not has_out:
            return ("no yes/no head (cls.output.weight): this is a Qwen3 embedding or chat "
                    "model, or a Qwen3-Reranker converted without llama.cpp's reranker "
                    "support, whose scores are meaningless; use a GGUF made by a recent "
                    "convert_hf_to_gguf.py, such as the catalog's qwen3-reranker-0.6b")
        return None
    if not marked and not (has_out or has_dense):
        return (f"this is an embedding model ({arch}), not a reranker: it has no "
                f"classification head; give it as the embedding model (--model), and a "
                f"reranker such as bge-reranker-base or qwen3-reranker-0.6b to --rerank")
    if metadata.get("tokenizer.ggml.model") == "bert" and not has_dense:
        return ("this BERT cross-encoder has lost its pooler: llama.cpp's converter drops "
                "bert.pooler.dense, so its scores are wrong; use an XLM-R reranker such as "
                "bge-reranker-base, whose head (classifier.dense/out_proj) survives")
    if not has_out and not has_dense:
        return "no classification head (cls.weight / cls.output.weight) in this GGUF"
    return None


def gguf_header(path: Path) -> tuple[dict[str, Any], set[str]]:
    """A GGUF file's metadata (scalars and strings as Python values, arrays as None) and its
    tensor names, read from the header alone (llama.cpp's API does not list tensors); a
    damaged header raises :class:`ModelLoadError` (see :mod:`gguf_embed.gguf_header`)."""
    header = read_header(path)
    meta = {k: None if isinstance(v, Array) else v for k, v in header.metadata.items()}
    return meta, set(header.tensors)


def gguf_tensor_names(path: Path) -> set[str]:
    return gguf_header(path)[1]


def looks_like_reranker(path: Path) -> bool:
    """Whether a GGUF is meant as a reranker (rank pooling, classifier labels or a head)."""
    meta, tensors = gguf_header(path)
    arch = str(meta.get("general.architecture", ""))
    named = "rerank" in f"{meta.get('general.name', '')} {path.name}".lower()
    return (meta.get(f"{arch}.pooling_type") == 4 or f"{arch}.classifier.output_labels" in meta
            or "cls.output.weight" in tensors or "cls.weight" in tensors or named)


# ------------------------------------------------------------------ reranking search results
WINDOW_TOKENS = 256  # passage tokens scored per candidate chunk (its best window)
CANDIDATES = 30
BLEND_K = 60  # reciprocal-rank constant of the blend, as the fusion's RRF
# The reranker's rank weighs this much in the blend (1.0: its order replaces the fused one).
# Rank-based, so a logit and a probability blend alike; it is not 1.0 because a window can
# miss the part of a chunk that matched, and the fused order then still counts.  Not measured
# on real weights yet (none reachable here): see BENCHMARKS.md.
BLEND_WEIGHT = 0.7


@dataclass(frozen=True)
class RerankOptions:
    candidates: int = CANDIDATES  # fused candidates scored
    window_tokens: int = WINDOW_TOKENS
    weight: float = BLEND_WEIGHT

    def __post_init__(self) -> None:
        if self.candidates < 1 or self.window_tokens < 16 or not 0.0 <= self.weight <= 1.0:
            raise InputError("rerank options: candidates >= 1, window_tokens >= 16, "
                             "0 <= weight <= 1", param="rerank")


class SearchReranker:
    """The hook that ``search.search`` applies to its fused candidates: score each candidate
    chunk's best window with the reranker, then blend the two rankings."""

    def __init__(self, reranker: Reranker, store: Any, options: RerankOptions | None = None,
                 word_pattern: Any = None) -> None:
        import re

        self.reranker = reranker
        self.store = store
        self.options = options or RerankOptions()
        self.candidates = self.options.candidates
        self.words = word_pattern or re.compile(r"\w+", re.UNICODE)
        self.scores: dict[int, float] = {}  # chunk id -> the reranker's raw score
        self.truncated: list[int] = []  # chunk ids whose window was cut to the context

    def __call__(self, query: str, order: list[tuple[int, float]]) -> list[tuple[int, float]]:
        head = order[:self.candidates]
        rows = self.store.chunk_rows([chunk_id for chunk_id, _ in head])
        head = [(c, s) for c, s in head if c in rows]
        if not head:
            return order
        terms = {w.lower() for w in self.words.findall(query)}
        windows = [best_window(rows[c].text, terms, self.reranker.count_tokens,
                               self.options.window_tokens, self.words) for c, _ in head]
        result = self.reranker.score(query, windows)
        self.scores = {c: float(s) for (c, _), s in zip(head, result.scores, strict=True)}
        self.truncated = [head[i][0] for i in result.truncated]
        by_score = sorted(range(len(head)), key=lambda i: (-float(result.scores[i]), i))
        w, k, n = self.options.weight, BLEND_K, len(head)
        blended = {}
        for rr_rank, i in enumerate(by_score):
            blended[head[i][0]] = w / (k + rr_rank + 1) + (1 - w) / (k + i + 1)
        new_head = sorted(blended.items(), key=lambda item: (-item[1], item[0]))
        rest = [(c, w / (k + n + 1) + (1 - w) / (k + n + j + 1))
                for j, (c, _) in enumerate(order[self.candidates:])]
        return new_head + rest


def best_window(text: str, terms: set[str], count: Any, budget: int, words: Any) -> str:
    """The run of whole lines of ``text`` within ``budget`` tokens that holds the most query
    terms (the first such run on a tie); the whole text when it fits.  A single line longer
    than the budget is returned whole (the reranker then cuts it, and says so)."""
    lines = text.split("\n")
    costs = [count(line) + 1 for line in lines]
    if sum(costs) <= budget:
        return text
    gains = [len({w.lower() for w in words.findall(line)} & terms) for line in lines]
    best = (-1, 0, 1)
    j = cost = gain = 0
    for i in range(len(lines)):
        while j < len(lines) and (j <= i or cost + costs[j] <= budget):
            cost += costs[j]
            gain += gains[j]
            j += 1
        if gain > best[0]:
            best = (gain, i, j)
        cost -= costs[i]
        gain -= gains[i]
    return "\n".join(lines[best[1]:best[2]])
