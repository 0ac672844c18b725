"""The retrieval eval on real tldr pages: hybrid beats vector and keyword, and vector search
matches an exact numpy search over the same vectors (tests/support/eval.py, on a subset)."""

from __future__ import annotations

from pathlib import Path

from gguf_embed import Engine
from tests.support.eval import evaluate


def test_hybrid_beats_both_and_vector_matches_exact(minilm: Engine, corpora: Path) -> None:
    report = evaluate(minilm, corpora, count=600)
    r = report["results"]
    assert report["documents"] >= 590
    for metric in ("mrr@10", "recall@10"):
        assert r["hybrid"][metric] >= r["vector"][metric], metric
        assert r["hybrid"][metric] >= r["keyword"][metric], metric
    assert r["hybrid"]["mrr@10"] > max(r["vector"]["mrr@10"], r["keyword"]["mrr@10"])
    exact = r["exact numpy (vector)"]["mrr@10"]
    assert abs(r["vector"]["mrr@10"] - exact) <= 0.01
    assert abs(r["vector, coarse bits + rescore (forced)"]["mrr@10"] - exact) <= 0.01
    assert r["vector"]["mrr@10"] > 0.4  # a real model, not noise
