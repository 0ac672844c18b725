"""A long real document (R-intro.pdf, ~100 pages) end to end: refused whole without truncation,
cut and reported with it, and chunked with every chunk inside the context."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_r_intro_whole_and_chunked(qwen_path: Path, corpora: Path) -> None:
    proc = subprocess.run([sys.executable, str(ROOT / "scripts" / "long_doc.py"), "--model",
                           str(qwen_path), "--pdf", str(corpora / "pdf" / "R-intro.pdf")],
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr
    r = json.loads(proc.stdout)
    assert r["pages"] > 90 and r["document_tokens"] > 10 * r["context"]
    assert r["whole_without_truncation"].startswith("refused: input 0 has")
    assert r["whole_truncated_reported"] and r["whole_tokens_embedded"] == r["context"]
    assert r["chunks_truncated"] == [] and r["largest_chunk"] <= r["chunk_settings"]["max_tokens"]
    assert r["chunk_tokens"] >= r["document_tokens"]  # every token is in a chunk (plus overlap)
