"""A long real document (the R FAQ in tests/data, ~30 pages) end to end: refused whole without
truncation, cut and reported with it, and chunked with every chunk inside the context."""

from __future__ import annotations

from pathlib import Path

from tests.support.long_doc import run


def test_long_pdf_whole_and_chunked(qwen_path: Path, corpora: Path) -> None:
    r = run(qwen_path, corpora / "pdf" / "R-FAQ.pdf", None)
    assert r["pages"] > 20 and r["document_tokens"] > 10 * r["context"]
    assert r["whole_without_truncation"].startswith("refused: input 0 has")
    assert r["whole_truncated_reported"] and r["whole_tokens_embedded"] == r["context"]
    assert r["chunks_truncated"] == [] and r["largest_chunk"] <= r["chunk_settings"]["max_tokens"]
    assert r["chunk_tokens"] >= r["document_tokens"]  # every token is in a chunk (plus overlap)
