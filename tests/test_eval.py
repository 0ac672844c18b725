"""The retrieval eval on real tldr pages: hybrid beats vector and keyword, and vector search
matches an exact numpy search over the same vectors (scripts/eval.py, on a subset)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_hybrid_beats_both_and_vector_matches_exact(minilm_path: Path, corpora: Path) -> None:
    proc = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "eval.py"), "--model", str(minilm_path),
         "--corpus", str(corpora), "--count", "600", "--json"],
        capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr
    report = json.loads(proc.stdout)
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
