"""A long document end to end: a PDF embedded whole up to the model's context (the cut
reported, never silent) and chunked, with every token counted. tests/test_long_doc.py runs it
on the PDF in tests/data; BENCHMARKS.md on R-intro.pdf (~100 pages) from the shared corpora.

    python -m tests.support.long_doc --model models/tiny-qwen3-f32.gguf
    python -m tests.support.long_doc --model models/shape-qwen3-0.6b-q8_0.gguf --context 32768 \
        --pdf CORPORA/pdf/R-intro.pdf    # CORPORA: the shared corpora, when you have them
"""

from __future__ import annotations

import argparse
import json
import resource
import time
from pathlib import Path

from gguf_embed import Engine, InputTooLong
from gguf_embed.chunking import ChunkSettings, chunk
from gguf_embed.extract import Extracted, extract

ROOT = Path(__file__).resolve().parent.parent.parent


def run(model: Path, pdf: Path, context: int | None,
        skip_chunks: bool = False) -> dict[str, object]:
    engine = Engine(model, n_ctx=context)
    doc = extract(pdf)
    assert isinstance(doc, Extracted), doc
    total = len(engine.tokenize(doc.text))
    report: dict[str, object] = {"model": engine.path.name, "context": engine.max_tokens,
                                 "pages": max(doc.pages or [0]), "document_tokens": total}
    try:
        engine.encode([doc.text])
        report["whole_without_truncation"] = "embedded (fits the context)"
    except InputTooLong as exc:
        report["whole_without_truncation"] = f"refused: {exc}"
    start = time.perf_counter()
    whole = engine.encode([doc.text], truncate=True)
    report["whole_seconds"] = round(time.perf_counter() - start, 2)
    report["whole_tokens_embedded"] = whole.token_counts[0]
    report["whole_truncated_reported"] = whole.truncated == [0]
    report["peak_rss_mb"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)
    if skip_chunks:
        return report
    settings = ChunkSettings.for_context(engine.max_tokens)
    count = lambda text: len(engine.tokenize(engine.spec.format_document(text)))  # noqa: E731
    chunks = chunk(doc, count, settings)
    start = time.perf_counter()
    result = engine.encode([c.text for c in chunks])
    seconds = time.perf_counter() - start
    report.update({
        "chunk_settings": settings.to_dict(), "chunks": len(chunks),
        "chunk_tokens": sum(result.token_counts), "largest_chunk": max(result.token_counts),
        "chunks_truncated": result.truncated, "chunk_seconds": round(seconds, 2),
        "chunk_tokens_per_second": round(sum(result.token_counts) / seconds, 1),
        "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024),
    })
    return report


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, default=ROOT / "models" / "tiny-qwen3-f32.gguf")
    parser.add_argument("--pdf", type=Path, default=ROOT / "tests" / "data" / "pdf" / "R-FAQ.pdf")
    parser.add_argument("--context", type=int, default=None, help="n_ctx (default: the model's)")
    parser.add_argument("--skip-chunks", action="store_true", help="only the whole document")
    opts = parser.parse_args()
    print(json.dumps(run(opts.model, opts.pdf, opts.context, opts.skip_chunks), indent=2))


if __name__ == "__main__":
    main()
